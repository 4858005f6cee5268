"""Server-side URL fetching with the guards every fetch needs: URL syntax, scheme, public addresses, size, time.

The address check and the connection use the same DNS answer (the connection is pinned to the address
that was checked), so a name that resolves to a public address once and a private one next (DNS
rebinding) cannot slip through. Proxy environment variables are ignored, and compressed bodies are
inflated within the size limit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import typing
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from liveavatar.errors import ParamError, TooLarge
from liveavatar.protocol.limits import url_problem

MAX_REDIRECTS = 5

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REFUSED_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/96",  # IPv4-compatible (deprecated), also :: and ::1
        "::ffff:0:0/96",  # IPv4-mapped
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
        "64:ff9b::/96",  # NAT64, well-known prefix
        "64:ff9b:1::/48",  # NAT64, local-use prefix
        "2002::/16",  # 6to4
        "2001::/32",  # Teredo
        "fec0::/10",  # site-local (deprecated, still routed by some networks)
    )
)
"""IPv6 ranges that carry or reach an IPv4 address, or are private in practice: never fetched from."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an ISATAP interface id (`::0:5efe:a.b.c.d`, `::200:5efe:a.b.c.d`) embeds."""
    interface = int(ip) & ((1 << 64) - 1)
    if (interface >> 32) & 0xFDFFFFFF == 0x5EFE:
        return ipaddress.IPv4Address(interface & 0xFFFFFFFF)
    return None


def forbidden_address(address: str | IPAddress) -> bool:
    """Whether a server-side fetch must not connect to `address` (private, loopback, link-local, embedded IPv4...)."""
    ip = address if not isinstance(address, str) else ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _REFUSED_V6):
            return True
        embedded = _embedded_ipv4(ip)
        if embedded is not None and forbidden_address(embedded):
            return True
    return not ip.is_global or ip.is_multicast


def validate_url(url: str) -> str:
    """`url` when it is a well-formed http(s) URL; ParamError with the reason otherwise (no I/O)."""
    problem = url_problem(url)
    if problem is not None:
        raise ParamError(f"URL {url[:200]!r} {problem}")
    return url


@dataclass(frozen=True)
class Fetched:
    """A fetched document."""

    url: str
    content: bytes
    content_type: str


async def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ParamError(f"cannot resolve {host[:100]!r}: {getattr(exc, 'strerror', None) or exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise ParamError(f"cannot resolve {host[:100]!r}")
    return addresses


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Resolves each host once, refuses it unless every address is allowed, and connects to a checked address."""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await _resolve(host, port)
        if not self._allow_private and any(forbidden_address(address) for address in addresses):
            raise ParamError(
                f"{host[:100]!r} resolves to a private, loopback or link-local address; "
                "set LIVEAVATAR_ALLOW_PRIVATE_URLS=true to allow it"
            )
        last: Exception | None = None
        for address in addresses:  # the checked answer itself: no second lookup
            try:
                return await self._backend.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: typing.Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise ParamError("unix sockets are never fetched from")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose connections go through `_PinnedBackend`."""

    def __init__(self, allow_private: bool) -> None:
        super().__init__(trust_env=False)
        # httpx takes no network backend, so its pool is rebuilt with one (same settings, pinned connects).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(),
            max_connections=4,
            network_backend=_PinnedBackend(allow_private),
        )


def _inflater(encoding: str) -> Any:
    """A streaming decoder for a Content-Encoding; ParamError for ones that cannot be capped."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise ParamError(f"unsupported content encoding {encoding[:40]!r}")


async def _read_capped(response: httpx.Response, url: str, max_bytes: int) -> bytes:
    """The body, inflated piece by piece so that no step holds more than `max_bytes` (+1) of output."""
    too_large = TooLarge(f"{url[:200]!r} is larger than {max_bytes} bytes", limit=max_bytes)
    inflater = _inflater(response.headers.get("content-encoding", ""))
    body = bytearray()
    async for raw in response.aiter_raw():
        if inflater is None:
            body += raw
        else:
            data = raw
            while data:
                body += inflater.decompress(data, max_bytes + 1 - len(body))
                data = inflater.unconsumed_tail
                if len(body) > max_bytes:
                    raise too_large
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)


async def fetch(url: str, *, max_bytes: int, timeout: float = 15.0, allow_private: bool = False) -> Fetched:
    """GET `url` (following up to 5 redirects, each checked) within `max_bytes` and `timeout` seconds.

    Every failure is a ParamError saying why: malformed URL, private address, HTTP status, size, time.
    """
    headers = {"user-agent": "liveavatar", "accept-encoding": "gzip, deflate"}
    try:
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(
                transport=_GuardedTransport(allow_private), follow_redirects=False, timeout=timeout, trust_env=False
            ) as http,
        ):
            for _ in range(MAX_REDIRECTS + 1):
                validate_url(url)
                async with http.stream("GET", url, headers=headers) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise ParamError(f"fetching {url[:200]!r} failed: HTTP {response.status_code}")
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > max_bytes and "content-encoding" not in response.headers:
                        raise TooLarge(f"{url[:200]!r} is larger than {max_bytes} bytes", limit=max_bytes)
                    body = await _read_capped(response, url, max_bytes)
                    return Fetched(url, body, response.headers.get("content-type", ""))
            raise ParamError(f"too many redirects fetching {url[:200]!r}")
    except TimeoutError as exc:
        raise ParamError(f"fetching {url[:200]!r} took longer than {timeout:g} s") from exc
    except (httpx.HTTPError, httpx.InvalidURL, zlib.error) as exc:
        raise ParamError(f"fetching {url[:200]!r} failed: {str(exc)[:200]}") from exc
    except (ValueError, UnicodeError) as exc:  # what the URL parsers raise for input validate_url let through
        raise ParamError(f"URL {url[:200]!r} cannot be fetched: {str(exc)[:200]}") from exc


async def check_url(url: str, *, allow_private: bool) -> None:
    """ParamError unless `url` is well-formed http(s) and (unless allowed) every address its host has is public."""
    validate_url(url)
    host = urlsplit(url).hostname or ""
    if allow_private:
        return
    port = urlsplit(url).port or (443 if url.lower().startswith("https") else 80)
    if any(forbidden_address(address) for address in await _resolve(host, port)):
        raise ParamError(
            f"{host[:100]!r} resolves to a private, loopback or link-local address; "
            "set LIVEAVATAR_ALLOW_PRIVATE_URLS=true to allow it"
        )
