"""ICMP and ICMPv6 echo messages (RFC 792, RFC 4443): build a request, recognise what answers it."""

from __future__ import annotations

import struct

ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
UNREACHABLE = {4: 3, 6: 1}
_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
IPV6_HEADER = 40


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def request(version: int, ident: int, seq: int, payload: bytes) -> bytes:
    """An echo request. ICMPv6's checksum covers a pseudo-header only the kernel knows: it fills it in."""
    message = _HEADER.pack(ECHO_REQUEST[version], 0, 0, ident, seq) + payload
    if version == 6:
        return message
    return _HEADER.pack(ECHO_REQUEST[version], 0, checksum(message), ident, seq) + payload


def _ours(header: bytes, version: int, kind: dict[int, int], ident: int | None, seq: int) -> bool:
    if len(header) < _HEADER.size:
        return False
    kind_got, _, _, ident_got, seq_got = _HEADER.unpack_from(header)
    return kind_got == kind[version] and seq_got == seq and (ident is None or ident_got == ident)


def answer(version: int, data: bytes, ident: int | None, seq: int, payload: bytes,
           ip_header: bool) -> tuple[str, int] | None:
    """What ``data`` says about our request ``(ident, seq)``: ``("reply", 0)``, ``("unreachable", code)``,
    or None when it is not about our request (a raw socket sees every ICMP message of the host).

    ``ident`` is None for an unprivileged ICMP socket: the kernel sets the identifier, and gives the
    socket only the replies that carry it. ``ip_header``: ``data`` starts with the IPv4 header (a raw
    IPv4 socket's reads do).
    """
    if ip_header:
        if not data:
            return None
        data = data[(data[0] & 0x0F) * 4:]
    if len(data) < _HEADER.size:
        return None
    kind, code = data[0], data[1]
    if kind == ECHO_REPLY[version]:
        if _ours(data, version, ECHO_REPLY, ident, seq) and data[_HEADER.size:] == payload:
            return ("reply", 0)
        return None
    if kind == UNREACHABLE[version]:
        inner = data[_HEADER.size:]  # the start of the datagram that could not be delivered
        offset = IPV6_HEADER if version == 6 else (inner[0] & 0x0F) * 4 if inner else 0
        if _ours(inner[offset:], version, ECHO_REQUEST, ident, seq):
            return ("unreachable", code)
    return None
