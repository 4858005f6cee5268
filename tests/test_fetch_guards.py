"""Fault suite, server-side fetches: SSRF forms, DNS rebinding, proxies, decompression bombs, malformed URLs, caps.

Real HTTP servers on loopback (asyncio streams); only name resolution is scripted, to play a rebinding DNS.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from liveavatar.errors import ParamError
from liveavatar.fetch import fetch, forbidden_address


class TinyServer:
    """An HTTP/1.1 server on 127.0.0.1 that answers every request with one canned response."""

    def __init__(self, body: bytes, headers: dict[str, str] | None = None, delay: float = 0.0) -> None:
        self.body = body
        self.headers = {"content-type": "text/plain", **(headers or {})}
        self.delay = delay
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TinyServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            await asyncio.sleep(self.delay)
            head = "HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
            head += f"content-length: {len(self.body)}\r\nconnection: close\r\n\r\n"
            writer.write(head.encode() + self.body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


# --- finding 7: every IPv6 form that embeds or reaches a private IPv4 address is refused -------------------


@pytest.mark.parametrize(
    "address",
    [
        "::127.0.0.1",  # IPv4-compatible
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:0:a00:1",  # IPv4-translated
        "64:ff9b::7f00:1",  # NAT64 -> 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 -> 10.0.0.1
        "64:ff9b:1::a00:1",  # NAT64 local-use prefix
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254 (cloud metadata)
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "fec0::1",  # site-local
        "2607:f8b0::5efe:a00:1",  # ISATAP id embedding 10.0.0.1
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
        "100.64.0.1",
        "::1",
        "fe80::1%eth0",
        "fd00::1",
        "224.0.0.1",
        "0.0.0.0",
    ],
)
def test_private_and_embedded_addresses_are_refused(address: str) -> None:
    assert forbidden_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:82b::200e"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert not forbidden_address(address)


@pytest.fixture
async def scripted_dns(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[[str, list[str]], list[str]]]:
    """Script the answers for one name (one per lookup, the last repeats); other names resolve as usual."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    scripts: dict[str, list[str]] = {}
    asked: list[str] = []

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in scripts:
            return await real(host, port, *args, **kwargs)
        asked.append(name)
        answers = scripts[name]
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (address, int(port or 80), 0, 0) if family == socket.AF_INET6 else (address, int(port or 80))
        return [(family, socket.SOCK_STREAM, 6, "", sockaddr)]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)

    def script(name: str, answers: list[str]) -> list[str]:
        scripts[name] = list(answers)
        return asked

    yield script


async def test_dns_rebinding_cannot_reach_a_private_address(
    scripted_dns: Callable[[str, list[str]], list[str]],
) -> None:
    async with TinyServer(b"internal secret") as internal:
        # First answer public (what a guard checks), every later one loopback (what a second lookup would use).
        asked = scripted_dns("rebind.test", ["93.184.216.34", "127.0.0.1"])
        with pytest.raises(ParamError):
            await fetch(f"http://rebind.test:{internal.port}/", max_bytes=1000, timeout=3)
        assert internal.requests == []  # the connection went to the checked address, never to loopback
        assert asked == ["rebind.test"]  # one lookup: the one that was checked


async def test_a_name_with_any_private_address_is_refused(scripted_dns: Callable[[str, list[str]], list[str]]) -> None:
    async with TinyServer(b"internal secret") as internal:
        scripted_dns("mixed.test", ["64:ff9b::7f00:1"])
        with pytest.raises(ParamError, match="private"):
            await fetch(f"http://mixed.test:{internal.port}/", max_bytes=1000, timeout=3)
        assert internal.requests == []


async def test_proxy_environment_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    async with TinyServer(b"direct") as target, TinyServer(b"via the proxy") as proxy:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        fetched = await fetch(f"http://127.0.0.1:{target.port}/", max_bytes=1000, timeout=5, allow_private=True)
        assert fetched.content == b"direct" and proxy.requests == []


async def test_a_decompression_bomb_is_stopped_at_the_size_cap() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)  # ~64 KB on the wire
    assert len(bomb) < 128 * 1024
    async with TinyServer(bomb, {"content-encoding": "gzip"}) as server:
        tracemalloc.start()
        try:
            with pytest.raises(ParamError, match="larger than"):
                await fetch(f"http://127.0.0.1:{server.port}/", max_bytes=1024 * 1024, timeout=10, allow_private=True)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"{peak / 1e6:.0f} MB held while reading a 1 MB-capped body"


async def test_gzip_within_the_cap_is_inflated() -> None:
    text = b"hello, compressed world " * 100
    async with TinyServer(gzip.compress(text), {"content-encoding": "gzip"}) as server:
        fetched = await fetch(f"http://127.0.0.1:{server.port}/", max_bytes=10_000, allow_private=True)
    assert fetched.content == text


@pytest.mark.parametrize(
    "url",
    [
        "http://a:99999/x.png",
        "http://[::1/x.png",
        f"http://{'a' * 64}.example/x.png",
        "http://a..b/x.png",
        "http://x:abc/x.png",
        "http://a.example/\ud800",
    ],
)
async def test_a_malformed_url_is_a_param_error_with_a_reason(url: str) -> None:
    with pytest.raises(ParamError, match="URL"):
        await fetch(url, max_bytes=1000, timeout=3)
