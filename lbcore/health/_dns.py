"""The DNS wire format a DNSCheck needs: one query, and the header of its response (RFC 1035 4.1)."""

from __future__ import annotations

import struct

from lbcore.health.checks import DNS_TYPES

CLASS_IN = 1
FLAG_QR = 0x8000  # a response
FLAG_RD = 0x0100  # recursion desired


def query(ident: int, name: str, rtype: str) -> bytes:
    """A standard query for ``name`` of type ``rtype`` (class IN, recursion desired)."""
    header = struct.pack("!HHHHHH", ident & 0xFFFF, FLAG_RD, 1, 0, 0, 0)
    qname = b"".join(bytes([len(label)]) + label.encode("ascii") for label in name.rstrip(".").split("."))
    return header + qname + b"\x00" + struct.pack("!HH", DNS_TYPES[rtype], CLASS_IN)


def answers(ident: int, response: bytes) -> int | None:
    """The answer count of a NOERROR response to query ``ident``; None if it is not one."""
    if len(response) < 12:
        return None
    rid, flags, _, ancount, _, _ = struct.unpack("!HHHHHH", response[:12])
    if rid != ident & 0xFFFF or not flags & FLAG_QR or flags & 0x000F:  # RCODE is the low 4 bits
        return None
    return int(ancount)
