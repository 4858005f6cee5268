"""ICE set-up shared by the server peer and the Python client: advertised host addresses, ICE servers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

_discover = aioice.ice.get_host_addresses
_hosts: tuple[str, ...] = ()


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if not _hosts:
        return _discover(use_ipv4, use_ipv6)
    return [host for host in _hosts if (":" in host and use_ipv6) or (":" not in host and use_ipv4)]


def advertise_hosts(hosts: Iterable[str]) -> None:
    """Advertise exactly these host addresses in ICE (process-wide); empty restores discovery.

    aioice never offers loopback and only sees local interfaces: a loopback client needs 127.0.0.1,
    a server behind a known public address needs that address.
    """
    global _hosts
    _hosts = tuple(hosts)
    aioice.ice.get_host_addresses = _host_addresses


def rtc_configuration(ice_servers: Sequence[dict[str, Any]]) -> RTCConfiguration:
    """An RTCConfiguration from RTCIceServer-shaped dicts (no public STUN unless given)."""
    servers = [
        RTCIceServer(urls=server["urls"], username=server.get("username"), credential=server.get("credential"))
        for server in ice_servers
    ]
    return RTCConfiguration(iceServers=servers)
