"""IP address classification for enrichment: packed bytes, private (non-global) and local, cached per address.

An address string is parsed once (socket.inet_pton, strict dotted quad or RFC 4291 text) and checked
against integer (network, mask) pairs; the answer is cached by the string, so the hot path costs one dict
lookup. IPv4-mapped IPv6 addresses (::ffff:10.1.2.3) are classified as their IPv4 address.

"Private" means not globally routable: RFC 1918, RFC 6598 shared space, loopback, link-local, IPv6 ULA and
the other special-purpose blocks below (documentation, benchmarking, reserved, "this network"). Multicast
is not private. "Local" means inside the configured `local_networks`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import NamedTuple

PRIVATE_NETWORKS: tuple[str, ...] = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "240.0.0.0/4", "255.255.255.255/32",
    "::/128", "::1/128", "100::/64", "2001:db8::/32", "64:ff9b:1::/48", "fc00::/7", "fe80::/10",
)
_MAPPED_PREFIX = 0xFFFF << 32  # ::ffff:0:0/96
_MAPPED_MASK = ((1 << 128) - 1) ^ 0xFFFFFFFF


class IpInfo(NamedTuple):
    packed: bytes  # 4 or 16 bytes, network order (Community ID input)
    is_private: bool
    is_local: bool


Networks = tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]  # (v4 (net, mask)s, v6 ...)


def compile_networks(cidrs: Iterable[str]) -> Networks:
    """CIDR strings -> integer (network, mask) pairs per IP version (done once, at start)."""
    v4: list[tuple[int, int]] = []
    v6: list[tuple[int, int]] = []
    for cidr in cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        pair = (int(net.network_address), int(net.netmask))
        (v4 if net.version == 4 else v6).append(pair)
    return tuple(v4), tuple(v6)


def _inside(value: int, pairs: tuple[tuple[int, int], ...]) -> bool:
    return any(value & mask == net for net, mask in pairs)


class NetworkClassifier:
    """Classifies address strings; `lookup` returns None for anything that is not an IP address."""

    __slots__ = ("_limit", "_local", "_private", "known")

    def __init__(self, local_networks: Iterable[str], *, cache_size: int = 200_000) -> None:
        self._local = compile_networks(local_networks)
        self._private = compile_networks(PRIVATE_NETWORKS)
        # Addresses classified so far: the hot path reads it first (`known.get(address)`, a hit
        # costs no call) and calls `lookup` only for an address it has not seen (None: not an address).
        self.known: dict[str, IpInfo | None] = {}
        self._limit = cache_size

    def lookup(self, address: str) -> IpInfo | None:
        info = self.known.get(address, False)
        if info is False:
            info = self._classify(address)
            if len(self.known) >= self._limit:
                self.known.clear()  # a scan of random addresses must not grow memory without bound
            self.known[address] = info
        return info  # type: ignore[return-value]

    def _classify(self, address: str) -> IpInfo | None:
        if type(address) is not str:
            return None
        try:
            if ":" in address:
                packed = socket.inet_pton(socket.AF_INET6, address)
            else:
                packed = socket.inet_pton(socket.AF_INET, address)
        except (OSError, ValueError):  # ValueError: embedded NUL
            return None
        value = int.from_bytes(packed, "big")
        if len(packed) == 16 and value & _MAPPED_MASK == _MAPPED_PREFIX:
            value &= 0xFFFFFFFF
            version = 0
        else:
            version = 0 if len(packed) == 4 else 1
        return IpInfo(packed, _inside(value, self._private[version]), _inside(value, self._local[version]))
