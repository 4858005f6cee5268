"""Limits on client text, shared by the REST bodies and the stream messages (one rule, two edges)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

MAX_ID: Final = 64
"""Ids (avatar, voice, knowledge base): the REST `Id`."""
MAX_MID: Final = 128
"""A stream message's `mid`; acks echo it, so it must fit the smallest transport (Agora's 1 KB)."""
MAX_CMD: Final = 32
"""Longest `cmd` an ack echoes (the known ones are shorter)."""
MAX_LANGUAGE: Final = 16
MAX_STT_TYPE: Final = 32
MAX_URL: Final = 2048
MAX_EVENT: Final = 64
MAX_PRON_ENTRIES: Final = 500
MAX_PRON_WORD: Final = 100
MAX_PRON_SPOKEN: Final = 200
MAX_IDX: Final = 1 << 20
"""Largest chunk index accepted at the edge (reassembly keeps a lower limit of its own)."""
MAX_INBOUND_BYTES: Final = 512 * 1024
"""One inbound stream message, raw (a 64 KB chat text fully \\u-escaped is ~390 KB)."""

_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_CONTROL: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def has_surrogate(text: str) -> bool:
    """Whether `text` holds a lone surrogate (a JSON `\\ud800` escape: not Unicode text, cannot be UTF-8)."""
    return _SURROGATE.search(text) is not None


def text_problem(text: str, max_chars: int | None = None, *, controls: bool = True) -> str | None:
    """Why `text` is not acceptable client text (None when it is): invalid Unicode, control characters, length."""
    if has_surrogate(text):
        return "is not valid Unicode (lone surrogate)"
    if controls and _CONTROL.search(text) is not None:
        return "contains control characters"
    if max_chars is not None and len(text) > max_chars:
        return f"is longer than {max_chars} characters"
    return None


def first_surrogate_path(value: object, path: str = "") -> str | None:
    """The path of the first string (or object key) in a JSON value that holds a lone surrogate."""
    if isinstance(value, str):
        return (path or "value") if has_surrogate(value) else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key)[:40]
            where = f"{path}.{name}" if path else name
            if isinstance(key, str) and has_surrogate(key):
                return f"{path or 'body'} (a key)"
            found = first_surrogate_path(item, where)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for number, item in enumerate(value):
            found = first_surrogate_path(item, f"{path}[{number}]")
            if found is not None:
                return found
    return None


def pron_map_problem(pron_map: Mapping[str, object]) -> str | None:
    """Why a pron_map cannot be used by the TTS (None when it can): size, types, blank words, invalid text."""
    if len(pron_map) > MAX_PRON_ENTRIES:
        return f"has more than {MAX_PRON_ENTRIES} entries"
    for word, spoken in pron_map.items():
        if not isinstance(word, str) or not word.strip():
            return "has a blank word"
        if not isinstance(spoken, str):
            return "values must be strings"
        problem = text_problem(word, MAX_PRON_WORD)
        if problem is not None:
            return f"word {short(word)} {problem}"
        problem = text_problem(spoken, MAX_PRON_SPOKEN)
        if problem is not None:
            return f"spoken form of {short(word)} {problem}"
    return None


def short(value: str, limit: int = 40) -> str:
    """`value` quoted and cut short, for an error reason (reasons never echo unbounded input)."""
    cut = value if len(value) <= limit else value[: limit - 3] + "..."
    return repr(_SURROGATE.sub("\ufffd", cut))


_LABEL: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_IPV4ISH: Final = re.compile(r"[0-9.]+")


def url_problem(url: str) -> str | None:
    """Why `url` is not a fetchable http(s) URL (None when it is): syntax, port, host name rules."""
    problem = text_problem(url, MAX_URL)
    if problem is not None:
        return problem
    if any(char.isspace() for char in url):
        return "contains white space"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", "Port could not be cast..."
        return f"is malformed ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must be an http(s) URL"
    host = parts.hostname
    if not host:
        return "has no host"
    if port == 0:
        return "has port 0"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return f"has an invalid IPv6 address {short(host)}"
        return None
    if _IPV4ISH.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"has an invalid IPv4 address {short(host)}"
        return None
    try:
        ascii_host = host if host.isascii() else host.encode("idna").decode("ascii")
    except UnicodeError:
        return f"has an invalid host name {short(host)}"
    name = ascii_host[:-1] if ascii_host.endswith(".") else ascii_host
    if len(name) > 253:
        return "has a host name longer than 253 characters"
    for label in name.split("."):
        if not _LABEL.fullmatch(label):
            reason = "an empty label" if not label else f"an invalid label {short(label)}"
            return f"has a host name with {reason} (labels: 1-63 letters, digits or hyphens)"
    return None
