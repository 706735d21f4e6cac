"""Community ID v1 flow hashing (https://github.com/corelight/community-id-spec), base64 form "1:...".

sha1(seed:2 . saddr . daddr . proto:1 . 0:1 . sport:2 . dport:2), endpoints ordered so the smaller
(address, port) comes first; ICMP/ICMPv6 type and code map to port equivalents as Zeek does (one-way
message types keep their order); protocols without ports hash the addresses and the protocol only.
Zeek logs an ICMP flow's type as id.orig_p and the counterpart type or code as id.resp_p, which maps to
the same ports, so (orig_p, resp_p) can be passed as (type, code).
"""

from __future__ import annotations

import struct
from binascii import b2a_base64
from hashlib import sha1

TCP, UDP, ICMP, ICMP6, SCTP = 6, 17, 1, 58, 132
PROTOCOL_NUMBERS: dict[str, int] = {"tcp": TCP, "udp": UDP, "icmp": ICMP, "icmp6": ICMP6, "sctp": SCTP}
_PORTED = frozenset({TCP, UDP, SCTP})

# ICMP type -> counterpart type for two-way message pairs (the spec's reference implementation).
_ICMP4_COUNTERPART = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 17: 18, 18: 17}
_ICMP6_COUNTERPART = {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135, 130: 131, 131: 130,
                      139: 140, 140: 139, 144: 145, 145: 144}
_PORTS = struct.Struct("!HH")
_PROTOS = tuple(bytes((proto, 0)) for proto in range(256))  # the protocol byte and its zero padding


def community_id(
    saddr: bytes, daddr: bytes, proto: int, sport: int | None = None, dport: int | None = None, seed: int = 0
) -> str | None:
    """The Community ID of a flow from packed addresses; None when the inputs cannot make one.

    For TCP/UDP/SCTP both ports are required; for ICMP/ICMPv6 `sport` is the type and `dport` the code.
    """
    if len(saddr) != len(daddr) or not 0 <= proto <= 255:
        return None
    one_way = False
    if proto in _PORTED or proto == ICMP or proto == ICMP6:
        if sport is None or dport is None or not (0 <= sport <= 65535 and 0 <= dport <= 65535):
            return None
        if proto == ICMP or proto == ICMP6:
            table = _ICMP4_COUNTERPART if proto == ICMP else _ICMP6_COUNTERPART
            counterpart = table.get(sport)
            if counterpart is None:
                one_way = True
            else:
                dport = counterpart
        if not one_way and (saddr > daddr or (saddr == daddr and sport > dport)):
            saddr, daddr, sport, dport = daddr, saddr, dport, sport
        data = seed.to_bytes(2, "big") + saddr + daddr + _PROTOS[proto] + _PORTS.pack(sport, dport)
    else:
        if saddr > daddr:
            saddr, daddr = daddr, saddr
        data = seed.to_bytes(2, "big") + saddr + daddr + _PROTOS[proto]
    return "1:" + b2a_base64(sha1(data, usedforsecurity=False).digest(), newline=False).decode("ascii")
