"""SSRF guard: refuse connections to internal addresses unless the config allows them.

The check runs in the connector's socket factory, on the address actually being connected,
so IP literals, odd spellings (`0.0.0.0`, `[::ffff:127.0.0.1]`), DNS rebinding and redirects
cannot get around it the way they get around a filtering resolver.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

GUARD_MARKER = "refused by SSRF guard"


def is_public_address(address: IPAddress) -> bool:
    """False for loopback, private, link-local, multicast, reserved and unspecified."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return is_public_address(embedded)
        if address.teredo is not None or address.is_site_local:
            return False
    return address.is_global and not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


class AddressPolicy:
    """Decides whether an address may be connected to (pure; no I/O)."""

    def __init__(self, allowed_networks: Iterable[IPNetwork] = ()) -> None:
        self.allowed_networks = tuple(allowed_networks)

    def allows(self, address: str | IPAddress) -> bool:
        try:
            ip = ipaddress.ip_address(
                address.split("%", 1)[0] if isinstance(address, str) else address
            )
        except ValueError:
            return False
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        for candidate in candidates:
            if any(
                candidate in net
                for net in self.allowed_networks
                if net.version == candidate.version
            ):
                return True
        return is_public_address(ip)

    def socket_factory(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """For aiohttp's TCPConnector(socket_factory=...): check, then create the socket."""
        family, type_, proto, _canonname, sockaddr = addr_info
        if not self.allows(sockaddr[0]):
            raise OSError(
                errno.EACCES,
                f"{GUARD_MARKER}: {sockaddr[0]} is not a public address and is not in "
                "http.allowed_networks",
            )
        sock = socket.socket(family=family, type=type_, proto=proto)
        sock.setblocking(False)
        return sock
