"""Secrets: API key generation and hashing, the installation secret, signed tokens."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jwt

from liveavatar.errors import AuthInvalid

KEY_PREFIX = "la_"
Audience = Literal["api", "join"]


def generate_key() -> str:
    """A new API key: 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form of an API key (keys are random, so a plain SHA-256 is enough)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_prefix(key: str) -> str:
    """The short, non-secret start of a key, shown by `keys list` to tell keys apart."""
    return key[: len(KEY_PREFIX) + 6]


def load_secret(data_dir: Path) -> bytes:
    """The per-installation signing secret, created (mode 0600) on first use."""
    path = data_dir / "secret.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


@dataclass(frozen=True)
class Claims:
    """What a verified token says."""

    subject: str
    expires_at: float


class TokenSigner:
    """Signs and verifies HS256 JWTs: long-lived API tokens and short-lived join tokens."""

    def __init__(self, secret: bytes, issuer: str = "liveavatar") -> None:
        self._secret = secret
        self._issuer = issuer

    def owner_uid(self, key_id: int) -> int:
        """The `uid` the API shows for objects of key `key_id`: stable, opaque, not the key's sequential id.

        48 bits of an HMAC under the installation secret (below 2**53, so JavaScript reads it exactly).
        """
        digest = hmac.new(self._secret, f"uid:{key_id}".encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[:6], "big") or 1

    def sign(self, subject: str, audience: Audience, ttl: float) -> str:
        """A token for `subject`, valid for `ttl` seconds."""
        now = time.time()
        claims = {
            "sub": subject,
            "aud": audience,
            "iss": self._issuer,
            "iat": int(now),
            "exp": int(now + ttl),
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str, audience: Audience) -> Claims:
        """The token's claims; AuthInvalid when it is malformed, forged, expired or for another use."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=audience,
                issuer=self._issuer,
                options={"require": ["sub", "exp", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthInvalid("token expired") from exc
        except jwt.PyJWTError as exc:
            raise AuthInvalid("invalid token") from exc
        return Claims(subject=str(claims["sub"]), expires_at=float(claims["exp"]))
