"""Server-side URL fetching with the guards every fetch needs: scheme, private addresses, size, time."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from liveavatar.errors import ParamError, TooLarge

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Fetched:
    """A fetched document."""

    url: str
    content: bytes
    content_type: str


def _forbidden(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def check_url(url: str, *, allow_private: bool) -> None:
    """ParamError unless `url` is http(s) and (unless allowed) every address its host resolves to is public."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ParamError(f"only http(s) URLs can be fetched: {url[:200]!r}")
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, parts.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ParamError(f"cannot resolve {parts.hostname!r}: {exc.strerror or exc}") from exc
    if any(_forbidden(str(info[4][0])) for info in infos):
        raise ParamError(
            f"{parts.hostname!r} resolves to a private, loopback or link-local address; "
            "set LIVEAVATAR_ALLOW_PRIVATE_URLS=true to allow it"
        )


async def fetch(url: str, *, max_bytes: int, timeout: float = 15.0, allow_private: bool = False) -> Fetched:
    """GET `url` (following up to 5 redirects, each checked) within `max_bytes` and `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout), httpx.AsyncClient(follow_redirects=False, timeout=timeout) as http:
            for _ in range(MAX_REDIRECTS + 1):
                await check_url(url, allow_private=allow_private)
                async with http.stream("GET", url, headers={"user-agent": "liveavatar"}) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise ParamError(f"fetching {url[:200]!r} failed: HTTP {response.status_code}")
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > max_bytes:
                        raise TooLarge(f"{url[:200]!r} is larger than {max_bytes} bytes", limit=max_bytes)
                    body = bytearray()
                    async for piece in response.aiter_bytes():
                        body += piece
                        if len(body) > max_bytes:
                            raise TooLarge(f"{url[:200]!r} is larger than {max_bytes} bytes", limit=max_bytes)
                    return Fetched(url, bytes(body), response.headers.get("content-type", ""))
            raise ParamError(f"too many redirects fetching {url[:200]!r}")
    except TimeoutError as exc:
        raise ParamError(f"fetching {url[:200]!r} took longer than {timeout:g} s") from exc
    except httpx.HTTPError as exc:
        raise ParamError(f"fetching {url[:200]!r} failed: {exc}") from exc
