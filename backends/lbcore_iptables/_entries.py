"""IPv4 netfilter rules as the bytes libiptc's ``iptc_append_entry`` takes, packed with struct.

Building a rule through python-iptables' Rule/Match/Target objects runs libxtables' parsers for
every option; packing the same bytes here is 18-38x cheaper (figures in
tests/netns/test_iptables_entries.py). python-iptables still holds the libiptc handle.

An entry is ``struct ipt_entry``, its matches, then one target, each padded to ``XT_ALIGN`` (8).
Every extension takes the name and revision that iptables 1.8.9 (and python-iptables, through
libxtables) pick on a current kernel, and is filled as iptables' parser fills it, so that
``iptables -C``/``-D`` with the same arguments finds the rule (libiptc compares the bytes).
Standard targets carry a name, not a verdict: libiptc maps ACCEPT/DROP/RETURN and chain names to
verdicts and jump offsets (``iptcc_map_target``). The kernel's words (entry, match, verdict) live here.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Literal

from lbcore.dnat import random_threshold

# struct ipt_entry (include/uapi/linux/netfilter_ipv4/ip_tables.h): struct ipt_ip {src, dst, smsk,
# dmsk, iniface, outiface, iniface_mask, outiface_mask, proto, flags, invflags}, nfcache,
# target_offset, next_offset, comefrom, struct xt_counters {pcnt, bcnt}; matches and target follow.
_ENTRY = struct.Struct("=4s4s4s4s16s16s16s16sHBBIHHIQQ")
_COUNTERS_AT = 96
# struct xt_entry_match / xt_entry_target (include/uapi/linux/netfilter/x_tables.h): the user view.
_EXTENSION = struct.Struct("=H29sB")
_NAME_LEN = 29  # XT_EXTENSION_MAXNAMELEN, with the NUL

IPT_INV_VIA_IN, IPT_INV_VIA_OUT, IPT_INV_SRCIP, IPT_INV_DSTIP = 0x01, 0x02, 0x08, 0x10
_IFNAMSIZ = 16
_ANY = IPv4Network("0.0.0.0/0")

# struct xt_tcp (xt_tcpudp.h): spts[2], dpts[2], option, flg_mask, flg_cmp, invflags
_TCP = struct.Struct("=2H2H4B")
# struct xt_udp (xt_tcpudp.h): spts[2], dpts[2], invflags
_UDP = struct.Struct("=2H2HB")
# struct xt_multiport_v1 (xt_multiport.h): flags, count, ports[15], pflags[15], invert
_MULTIPORT = struct.Struct("=BB15H15BB")
XT_MULTIPORT_DESTINATION = 1
MULTIPORT_MAX = 15  # XT_MULTI_PORTS
# struct xt_comment_info (xt_comment.h): comment[XT_MAX_COMMENT_LEN]
_COMMENT = struct.Struct("=256s")
# struct xt_mark_mtinfo1 (xt_mark.h): mark, mask, invert
_MARK_MATCH = struct.Struct("=IIB")
# struct xt_statistic_info (xt_statistic.h): mode, flags, u.nth {every, packet, count} (u.random
# .probability is every), then the kernel's struct xt_statistic_priv *master.
_STATISTIC = struct.Struct("=HHIIIQ")
XT_STATISTIC_MODE_RANDOM, XT_STATISTIC_MODE_NTH = 0, 1
# struct xt_recent_mtinfo_v1 (xt_recent.h): seconds, hit_count, check_set, invert, name[200], side,
# then union nf_inet_addr mask, 4-aligned.
_RECENT = struct.Struct("=IIBB200sBx16s")
XT_RECENT_CHECK, XT_RECENT_SET, XT_RECENT_UPDATE, XT_RECENT_REMOVE, XT_RECENT_REAP = 1, 2, 4, 8, 32
XT_RECENT_SOURCE, XT_RECENT_DEST = 0, 1
_RECENT_NAME_LEN = 200
# struct nf_nat_ipv4_multi_range_compat (nf_nat.h) holding one struct nf_nat_ipv4_range: rangesize,
# flags, min_ip, max_ip, min.all, max.all (addresses and ports in network order).
_NAT_COMPAT = struct.Struct("=II4s4s2s2s")
# struct nf_nat_range2 (nf_nat.h): flags, min_addr, max_addr, min_proto, max_proto, base_proto.
_NAT_RANGE2 = struct.Struct("=I16s16s2s2s2s")
NF_NAT_RANGE_MAP_IPS, NF_NAT_RANGE_PROTO_SPECIFIED = 1, 2
# struct xt_mark_tginfo2 (xt_mark.h): mark, mask
_MARK_TARGET = struct.Struct("=II")
# struct xt_standard_target (x_tables.h): the target header, then int verdict.
_VERDICT = struct.Struct("=i")
# Verdicts as the kernel stores them: -NF_DROP - 1, -NF_ACCEPT - 1, -NF_QUEUE - 1, XT_RETURN.
_VERDICT_NAMES = {-1: "DROP", -2: "ACCEPT", -4: "QUEUE", -5: "RETURN"}


def _align(size: int) -> int:
    """Round up to XT_ALIGN: the alignment of a u64 (8 on every Linux ABI lbcore supports)."""
    return (size + 7) & ~7


def _name(name: str) -> bytes:
    raw = name.encode("ascii")
    if not raw or len(raw) >= _NAME_LEN or b"\0" in raw:
        raise ValueError(f"{name!r} is not an extension or chain name (1..{_NAME_LEN - 1} ASCII characters)")
    return raw


def _extension(name: str, revision: int, data: bytes) -> bytes:
    """Return one xt_entry_match or xt_entry_target: header, data, zero padding."""
    size = _EXTENSION.size + _align(len(data))
    return _EXTENSION.pack(size, _name(name), revision) + data.ljust(size - _EXTENSION.size, b"\0")


def _interface(name: str | None) -> tuple[bytes, bytes]:
    """Return (name, mask) as xtables_parse_interface() sets them; a trailing '+' is a prefix match."""
    if name is None:
        return b"", b""
    raw = name.encode("ascii")
    if not raw or len(raw) >= _IFNAMSIZ:
        raise ValueError(f"{name!r} is not an interface name (1..{_IFNAMSIZ - 1} characters)")
    # The mask covers the NUL too, so "eth0" does not match "eth01"; a '+' is kept in the name.
    return raw, b"\xff" * (len(raw) - 1 if raw.endswith(b"+") else len(raw) + 1)


def _port(port: int) -> int:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"{port} is not a port (0..65535)")
    return port


def _range(ports: tuple[int, int] | None) -> tuple[int, int]:
    if ports is None:
        return 0, 0xFFFF
    low, high = ports
    if _port(low) > _port(high):
        raise ValueError(f"{low}:{high} is not a port range")
    return low, high


def entry(
    matches: Sequence[bytes],
    target: bytes,
    *,
    protocol: int = 0,
    src: IPv4Network | None = None,
    dst: IPv4Network | None = None,
    invert_src: bool = False,
    invert_dst: bool = False,
    in_interface: str | None = None,
    out_interface: str | None = None,
) -> bytes:
    """Return one struct ipt_entry with its matches and target, zero counters.

    Args:
        matches: match builders' results, in the order the kernel evaluates them.
        target: a target builder's result.
        protocol: the IP protocol number (6 tcp, 17 udp); 0 is any. tcp()/udp() need it set.
        src, dst: the networks ``-s``/``-d`` name; None is any.
        invert_src, invert_dst: ``! -s``/``! -d``.
        in_interface, out_interface: ``-i``/``-o``; a trailing '+' matches a prefix.

    Raises:
        ValueError: an interface name is empty or longer than 15 characters.
    """
    in_name, in_mask = _interface(in_interface)
    out_name, out_mask = _interface(out_interface)
    invflags = ((IPT_INV_SRCIP if invert_src else 0) | (IPT_INV_DSTIP if invert_dst else 0))
    src = src or _ANY
    dst = dst or _ANY
    target_offset = _ENTRY.size + sum(len(match) for match in matches)
    head = _ENTRY.pack(
        src.network_address.packed, dst.network_address.packed, src.netmask.packed, dst.netmask.packed,
        in_name, out_name, in_mask, out_mask, protocol, 0, invflags,
        0, target_offset, target_offset + len(target), 0, 0, 0,
    )
    return b"".join((head, *matches, target))


# Matches


def tcp(*, sport: tuple[int, int] | None = None, dport: tuple[int, int] | None = None) -> bytes:
    """Return ``-m tcp --sport lo:hi --dport lo:hi`` (revision 0); None is any port.

    Raises:
        ValueError: a port is outside 0..65535, or a range is reversed.
    """
    return _extension("tcp", 0, _TCP.pack(*_range(sport), *_range(dport), 0, 0, 0, 0))


def udp(*, sport: tuple[int, int] | None = None, dport: tuple[int, int] | None = None) -> bytes:
    """Return ``-m udp --sport lo:hi --dport lo:hi`` (revision 0); None is any port.

    Raises:
        ValueError: a port is outside 0..65535, or a range is reversed.
    """
    return _extension("udp", 0, _UDP.pack(*_range(sport), *_range(dport), 0))


def multiport(dports: Sequence[int]) -> bytes:
    """Return ``-m multiport --dports p1,p2,...`` (revision 1, struct xt_multiport_v1).

    Raises:
        ValueError: no port, more than 15, or a port outside 0..65535.
    """
    if not 1 <= len(dports) <= MULTIPORT_MAX:
        raise ValueError(f"multiport takes 1..{MULTIPORT_MAX} ports, not {len(dports)}")
    ports = [_port(port) for port in dports] + [0] * (MULTIPORT_MAX - len(dports))
    pflags = [0] * MULTIPORT_MAX  # no port is the start of a range
    return _extension("multiport", 1, _MULTIPORT.pack(XT_MULTIPORT_DESTINATION, len(dports), *ports, *pflags, 0))


def comment(text: str) -> bytes:
    """Return ``-m comment --comment text`` (revision 0).

    Raises:
        ValueError: the text is longer than 255 bytes in UTF-8.
    """
    raw = text.encode()
    if len(raw) >= _COMMENT.size:
        raise ValueError(f"comment {text!r} is longer than {_COMMENT.size - 1} bytes")
    return _extension("comment", 0, _COMMENT.pack(raw))


def mark(value: int, mask: int = 0xFFFFFFFF, invert: bool = False) -> bytes:
    """Return ``-m mark [!] --mark value/mask`` (revision 1, struct xt_mark_mtinfo1).

    Raises:
        struct.error: value or mask is outside 0..2**32-1.
    """
    return _extension("mark", 1, _MARK_MATCH.pack(value, mask, invert))


def statistic_nth(every: int, packet: int = 0) -> bytes:
    """Return ``-m statistic --mode nth --every n --packet p`` (revision 0).

    Raises:
        ValueError: every is not positive, or packet is outside 0..every-1.
    """
    if every < 1 or not 0 <= packet < every:
        raise ValueError(f"--every {every} --packet {packet}: need every >= 1 and 0 <= packet < every")
    # libxt_statistic stores every - 1, and starts the kernel's counter at every - packet.
    return _extension("statistic", 0, _STATISTIC.pack(XT_STATISTIC_MODE_NTH, 0, every - 1, packet,
                                                      every - 1 - packet, 0))


def statistic_random(probability: float) -> bytes:
    """Return ``-m statistic --mode random --probability p`` (revision 0).

    Raises:
        ValueError: the probability is outside 0..1.
    """
    return statistic_random_threshold(random_threshold(probability))


def statistic_random_threshold(threshold: int) -> bytes:
    """Return the random statistic match for a threshold random_threshold() already quantised.

    Raises:
        ValueError: the threshold is outside 0..2**31.
    """
    if not 0 <= threshold <= 0x80000000:
        raise ValueError(f"{threshold} is not a statistic threshold (0..2**31)")
    # statistic_check() sets u.nth.count = every - packet whatever the mode; in random mode every
    # is the probability, so iptables stores it twice, and so do we, to stay byte-identical.
    return _extension("statistic", 0, _STATISTIC.pack(XT_STATISTIC_MODE_RANDOM, 0, threshold, 0, threshold, 0))


def recent(
    name: str,
    *,
    set: bool = False,
    rcheck: bool = False,
    update: bool = False,
    remove: bool = False,
    seconds: int = 0,
    hitcount: int = 0,
    reap: bool = False,
    rsource: bool = True,
    mask: IPv4Address | None = None,
) -> bytes:
    """Return ``-m recent --name name --set|--rcheck|--update|--remove ...`` (revision 1).

    Args:
        name: the list's name (/proc/net/xt_recent/<name>).
        set, rcheck, update, remove: the command; exactly one is true.
        seconds, hitcount: ``--seconds``/``--hitcount``; 0 is not given.
        reap: ``--reap`` (needs seconds).
        rsource: ``--rsource`` (the source address) if true, else ``--rdest``.
        mask: ``--mask``: the netmask applied to addresses in the list; None is 255.255.255.255.

    Raises:
        ValueError: not exactly one command, or the name is empty or longer than 199 bytes.
    """
    commands = (XT_RECENT_SET if set else 0) | (XT_RECENT_CHECK if rcheck else 0) \
        | (XT_RECENT_UPDATE if update else 0) | (XT_RECENT_REMOVE if remove else 0)
    if commands.bit_count() != 1:
        raise ValueError("recent takes exactly one of set, rcheck, update, remove")
    raw = name.encode()
    if not raw or len(raw) >= _RECENT_NAME_LEN:
        raise ValueError(f"recent list name {name!r} is not 1..{_RECENT_NAME_LEN - 1} bytes")
    # recent_init() writes "DEFAULT" and --name copies over it, up to its NUL: iptables leaves
    # the tail ("foo\0ULT"), and libiptc compares it when iptables -C/-D looks for the rule.
    # The mask is stored as iptables-restore and python-iptables parse the "--mask a.b.c.d" that
    # iptables-save prints: the IPv4 word only. (recent_init() alone sets all 16 bytes.)
    field = bytearray(b"DEFAULT".ljust(_RECENT_NAME_LEN, b"\0"))
    field[: len(raw) + 1] = raw + b"\0"
    return _extension("recent", 1, _RECENT.pack(
        seconds, hitcount, commands | (XT_RECENT_REAP if reap else 0), 0, bytes(field),
        XT_RECENT_SOURCE if rsource else XT_RECENT_DEST, mask.packed if mask else b"\xff" * 4,
    ))


# Targets


def verdict(name: Literal["ACCEPT", "DROP", "RETURN"]) -> bytes:
    """Return ``-j ACCEPT|DROP|RETURN``: a struct xt_standard_target that libiptc maps by name."""
    return _extension(name, 0, _VERDICT.pack(0))


def fallthrough() -> bytes:
    """Return no target at all (a rule without ``-j``: it only counts), as libiptc maps ""."""
    data = _VERDICT.pack(0).ljust(_align(_VERDICT.size), b"\0")
    return _EXTENSION.pack(_EXTENSION.size + len(data), b"", 0) + data


def jump(chain: str) -> bytes:
    """Return ``-j chain``: a standard target naming a user chain, which libiptc turns into an offset.

    Raises:
        ValueError: the name is empty, not ASCII, or longer than 28 characters.
    """
    return _extension(chain, 0, _VERDICT.pack(0))


def dnat(address: IPv4Address, port: int | None = None) -> bytes:
    """Return ``-j DNAT --to-destination address[:port]`` (revision 2, struct nf_nat_range2).

    Raises:
        ValueError: the port is outside 0..65535.
    """
    flags = NF_NAT_RANGE_MAP_IPS | (NF_NAT_RANGE_PROTO_SPECIFIED if port is not None else 0)
    proto = _port(port or 0).to_bytes(2, "big")
    addr = address.packed.ljust(16, b"\0")
    return _extension("DNAT", 2, _NAT_RANGE2.pack(flags, addr, addr, proto, proto, b"\0\0"))


def snat(address: IPv4Address) -> bytes:
    """Return ``-j SNAT --to-source address`` (revision 0: iptables has no later one for IPv4)."""
    return _extension("SNAT", 0, _NAT_COMPAT.pack(1, NF_NAT_RANGE_MAP_IPS, address.packed, address.packed,
                                                  b"\0\0", b"\0\0"))


def masquerade() -> bytes:
    """Return ``-j MASQUERADE`` (revision 0, one empty range)."""
    return _extension("MASQUERADE", 0, _NAT_COMPAT.pack(1, 0, b"", b"", b"", b""))


def redirect(port: int | None = None) -> bytes:
    """Return ``-j REDIRECT [--to-ports port]`` (revision 0).

    Raises:
        ValueError: the port is outside 0..65535.
    """
    flags = NF_NAT_RANGE_PROTO_SPECIFIED if port is not None else 0
    proto = _port(port or 0).to_bytes(2, "big")
    return _extension("REDIRECT", 0, _NAT_COMPAT.pack(1, flags, b"", b"", proto, proto))


def set_mark(value: int, mask: int = 0xFFFFFFFF) -> bytes:
    """Return ``-j MARK --set-xmark value/mask`` (revision 2): mark = (mark & ~mask) ^ value.

    ``--set-mark v`` is the same with the default mask; ``--set-mark v/m`` is ``set_mark(v, v | m)``.

    Raises:
        struct.error: value or mask is outside 0..2**32-1.
    """
    return _extension("MARK", 2, _MARK_TARGET.pack(value, mask))


# Decoders, for entries as libiptc returns them (iptc_first_rule/iptc_next_rule)


def raw_entry(entry_struct: ctypes.Structure) -> bytes:
    """Return the bytes of an entry python-iptables hands out as a ctypes ``ipt_entry``."""
    return ctypes.string_at(ctypes.addressof(entry_struct), int(entry_struct.next_offset))


def _extensions(raw: bytes) -> Iterator[tuple[str, bytes]]:
    """Yield (name, data) of each match, then of the target, walking by their sizes."""
    target_offset, next_offset = _ENTRY.unpack_from(raw)[12:14]
    offset = _ENTRY.size
    while offset < next_offset:
        size, name, _ = _EXTENSION.unpack_from(raw, offset)
        if size < _EXTENSION.size or offset + size > (target_offset if offset < target_offset else next_offset):
            raise ValueError(f"entry is corrupt: an extension of {size} bytes at offset {offset}")
        # Entries read back from libiptc hold stale bytes after the name's NUL: stop there.
        yield name.split(b"\0", 1)[0].decode("ascii"), raw[offset + _EXTENSION.size : offset + size]
        offset += size


def comment_of(raw: bytes) -> str | None:
    """Return the text of the entry's first comment match, or None if it has none.

    Raises:
        ValueError: a match's size runs past the entry.
    """
    *matches, _ = _extensions(raw)
    for name, data in matches:
        if name == "comment":
            return data.split(b"\0", 1)[0].decode()
    return None


def comments_of(raw: bytes) -> str:
    """Return the texts of all the entry's comment matches joined, or "" if it has none.

    A text longer than one comment's 255 bytes is stored as several comment matches, in order.

    Raises:
        ValueError: a match's size runs past the entry.
    """
    *matches, _ = _extensions(raw)
    return b"".join(data.split(b"\0", 1)[0] for name, data in matches if name == "comment").decode()


def counters_of(raw: bytes) -> tuple[int, int]:
    """Return the entry's (packets, bytes)."""
    packets, octets = struct.unpack_from("=QQ", raw, _COUNTERS_AT)
    return packets, octets


def target_name_of(raw: bytes) -> str:
    """Return the target's name: an extension's ("DNAT"), or a verdict's ("ACCEPT", "RETURN").

    A jump to a user chain is a standard target holding the chain's offset, not its name: it
    returns "", and libiptc's iptc_get_target() (python-iptables Table.get_target) names the chain.
    An entry built here, before libiptc maps it, returns the name it was built with.

    Raises:
        ValueError: a match's size runs past the entry.
    """
    *_, (name, data) = _extensions(raw)
    if name:
        return name
    return _VERDICT_NAMES.get(_VERDICT.unpack_from(data)[0], "")
