"""The IPVS generic netlink messages, and their translation to and from lbcore's model.

pyroute2 0.9.7's IPVS classes have gaps (the netmask is always an IPv4 address, so IPv6 services
cannot be created; TUN_PORT is host order; daemon and config attributes are raw hex; stats are
dropped). The message classes here are complete and are the only place that knows the wire form.
The kernel's words (dest, fwd_method, u_thresh) live here and nowhere else.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any, assert_never

import attrs
from pyroute2.netlink import genlmsg, nla

from lbcore.enums import ForwardMethod, PersistenceEngine, Protocol, Scheduler, SchedulerFlag, TunnelType
from lbcore.model import IPAddress, Persistence, RealServer, ServiceKey, Timeouts, Tunnel, VirtualService
from lbcore.ops import (
    AddRealServer,
    AddRule,
    AddService,
    DeleteRealServer,
    DeleteRule,
    DeleteService,
    EditRealServer,
    EditService,
    Op,
    SetSysctls,
    SetTimeouts,
)

VERSION = 1

# enum ipvs_cmds (include/uapi/linux/ip_vs.h)
CMD_NEW_SERVICE, CMD_SET_SERVICE, CMD_DEL_SERVICE, CMD_GET_SERVICE = 1, 2, 3, 4
CMD_NEW_DEST, CMD_SET_DEST, CMD_DEL_DEST, CMD_GET_DEST = 5, 6, 7, 8
CMD_NEW_DAEMON, CMD_DEL_DAEMON, CMD_GET_DAEMON = 9, 10, 11
CMD_SET_CONFIG, CMD_GET_CONFIG = 12, 13
CMD_GET_INFO = 15
CMD_ZERO, CMD_FLUSH = 16, 17
#: The kernel's name of each command, for messages.
CMD_NAMES = {1: "IPVS_CMD_NEW_SERVICE", 2: "IPVS_CMD_SET_SERVICE", 3: "IPVS_CMD_DEL_SERVICE",
             4: "IPVS_CMD_GET_SERVICE", 5: "IPVS_CMD_NEW_DEST", 6: "IPVS_CMD_SET_DEST", 7: "IPVS_CMD_DEL_DEST",
             8: "IPVS_CMD_GET_DEST", 9: "IPVS_CMD_NEW_DAEMON", 10: "IPVS_CMD_DEL_DAEMON",
             11: "IPVS_CMD_GET_DAEMON", 12: "IPVS_CMD_SET_CONFIG", 13: "IPVS_CMD_GET_CONFIG",
             15: "IPVS_CMD_GET_INFO", 16: "IPVS_CMD_ZERO", 17: "IPVS_CMD_FLUSH"}
#: Commands that change the kernel (counted to prove that a no-op apply sends none).
MUTATING = frozenset({CMD_NEW_SERVICE, CMD_SET_SERVICE, CMD_DEL_SERVICE, CMD_NEW_DEST, CMD_SET_DEST,
                      CMD_DEL_DEST, CMD_NEW_DAEMON, CMD_DEL_DAEMON, CMD_SET_CONFIG, CMD_ZERO, CMD_FLUSH})

SVC_F_PERSISTENT = 0x1
SVC_F_ONEPACKET = 0x4
SVC_F_SCHED1 = 0x8
SVC_F_SCHED2 = 0x10
SVC_FLAGS_MASK = 0xFFFFFFFF
TUN_F_CSUM, TUN_F_REMCSUM = 0x1, 0x2
_TUN_TYPES = {TunnelType.IPIP: 0, TunnelType.GUE: 1, TunnelType.GRE: 2}
_FWD = {0: ForwardMethod.NAT, 2: ForwardMethod.TUNNEL, 3: ForwardMethod.DR}
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_PROTO = {p.number: p for p in Protocol}


class _stats(nla):
    nla_map = (
        ("IPVS_STATS_ATTR_UNSPEC", "none"),
        ("IPVS_STATS_ATTR_CONNS", "uint32"),
        ("IPVS_STATS_ATTR_INPKTS", "uint32"),
        ("IPVS_STATS_ATTR_OUTPKTS", "uint32"),
        ("IPVS_STATS_ATTR_INBYTES", "uint64"),
        ("IPVS_STATS_ATTR_OUTBYTES", "uint64"),
        ("IPVS_STATS_ATTR_CPS", "uint32"),
        ("IPVS_STATS_ATTR_INPPS", "uint32"),
        ("IPVS_STATS_ATTR_OUTPPS", "uint32"),
        ("IPVS_STATS_ATTR_INBPS", "uint32"),
        ("IPVS_STATS_ATTR_OUTBPS", "uint32"),
    )


class _stats64(nla):
    nla_map = tuple((name, "uint64" if kind != "none" else "none") for name, kind in _stats.nla_map)


class ipvs_msg(genlmsg):
    """One IPVS generic netlink message (struct genlmsghdr + IPVS_CMD_ATTR_*)."""

    nla_map = (
        ("IPVS_CMD_ATTR_UNSPEC", "none"),
        ("IPVS_CMD_ATTR_SERVICE", "service"),
        ("IPVS_CMD_ATTR_DEST", "dest"),
        ("IPVS_CMD_ATTR_DAEMON", "daemon"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_UDP", "uint32"),
    )

    class service(nla):
        nla_map = (
            ("IPVS_SVC_ATTR_UNSPEC", "none"),
            ("IPVS_SVC_ATTR_AF", "uint16"),
            ("IPVS_SVC_ATTR_PROTOCOL", "uint16"),
            ("IPVS_SVC_ATTR_ADDR", "cdata"),  # union nf_inet_addr: 16 bytes
            ("IPVS_SVC_ATTR_PORT", "be16"),
            ("IPVS_SVC_ATTR_FWMARK", "uint32"),
            ("IPVS_SVC_ATTR_SCHED_NAME", "asciiz"),
            ("IPVS_SVC_ATTR_FLAGS", "flags"),
            ("IPVS_SVC_ATTR_TIMEOUT", "uint32"),
            ("IPVS_SVC_ATTR_NETMASK", "cdata"),  # be32 mask (IPv4) or host-order prefix length (IPv6)
            ("IPVS_SVC_ATTR_STATS", "stats"),
            ("IPVS_SVC_ATTR_PE_NAME", "asciiz"),
            ("IPVS_SVC_ATTR_STATS64", "stats64"),
        )

        class flags(nla):
            fields = (("flags", "I"), ("mask", "I"))

        stats = _stats
        stats64 = _stats64

    class dest(nla):
        nla_map = (
            ("IPVS_DEST_ATTR_UNSPEC", "none"),
            ("IPVS_DEST_ATTR_ADDR", "cdata"),
            ("IPVS_DEST_ATTR_PORT", "be16"),
            ("IPVS_DEST_ATTR_FWD_METHOD", "uint32"),
            ("IPVS_DEST_ATTR_WEIGHT", "uint32"),
            ("IPVS_DEST_ATTR_U_THRESH", "uint32"),
            ("IPVS_DEST_ATTR_L_THRESH", "uint32"),
            ("IPVS_DEST_ATTR_ACTIVE_CONNS", "uint32"),
            ("IPVS_DEST_ATTR_INACT_CONNS", "uint32"),
            ("IPVS_DEST_ATTR_PERSIST_CONNS", "uint32"),
            ("IPVS_DEST_ATTR_STATS", "stats"),
            ("IPVS_DEST_ATTR_ADDR_FAMILY", "uint16"),
            ("IPVS_DEST_ATTR_STATS64", "stats64"),
            ("IPVS_DEST_ATTR_TUN_TYPE", "uint8"),
            ("IPVS_DEST_ATTR_TUN_PORT", "be16"),
            ("IPVS_DEST_ATTR_TUN_FLAGS", "uint16"),
        )

        stats = _stats
        stats64 = _stats64

    class daemon(nla):
        nla_map = (
            ("IPVS_DAEMON_ATTR_UNSPEC", "none"),
            ("IPVS_DAEMON_ATTR_STATE", "uint32"),
            ("IPVS_DAEMON_ATTR_MCAST_IFN", "asciiz"),
            ("IPVS_DAEMON_ATTR_SYNC_ID", "uint32"),
            ("IPVS_DAEMON_ATTR_SYNC_MAXLEN", "uint16"),
            ("IPVS_DAEMON_ATTR_MCAST_GROUP", "cdata"),
            ("IPVS_DAEMON_ATTR_MCAST_GROUP6", "cdata"),
            ("IPVS_DAEMON_ATTR_MCAST_PORT", "uint16"),
            ("IPVS_DAEMON_ATTR_MCAST_TTL", "uint8"),
        )


Attrs = list[tuple[str, Any]]


def _addr(address: IPAddress) -> bytes:
    return address.packed.ljust(16, b"\0")


def _read_addr(raw: bytes, family: int) -> IPAddress:
    return ipaddress.IPv4Address(raw[:4]) if family == socket.AF_INET else ipaddress.IPv6Address(raw[:16])


def service_key_attrs(key: ServiceKey) -> Attrs:
    """What identifies a service: AF and FWMARK, or AF, PROTOCOL, ADDR and PORT."""
    attrs_: Attrs = [("IPVS_SVC_ATTR_AF", _AF[key.family])]
    if key.fwmark:
        return [*attrs_, ("IPVS_SVC_ATTR_FWMARK", key.fwmark)]
    assert key.protocol is not None and key.address is not None
    return [*attrs_, ("IPVS_SVC_ATTR_PROTOCOL", key.protocol.number),
            ("IPVS_SVC_ATTR_ADDR", _addr(key.address)), ("IPVS_SVC_ATTR_PORT", key.port)]


def service_attrs(svc: VirtualService) -> Attrs:
    """Every attribute NEW_SERVICE and SET_SERVICE require (both replace flags, timeout, netmask)."""
    flags = sum(f.bit for f in svc.flags)
    if svc.one_packet:
        flags |= SVC_F_ONEPACKET
    timeout = 0
    prefix = Persistence().prefix(svc.family)
    if svc.persistence is not None:
        flags |= SVC_F_PERSISTENT
        timeout = svc.persistence.timeout
        prefix = svc.persistence.prefix(svc.family)
    # The kernel reads the netmask as a be32 mask for IPv4 and a host-order prefix for IPv6.
    netmask = prefix.packed if isinstance(prefix, ipaddress.IPv4Address) else struct.pack("=I", prefix)
    out = [*service_key_attrs(svc.key), ("IPVS_SVC_ATTR_SCHED_NAME", svc.scheduler.value),
           ("IPVS_SVC_ATTR_FLAGS", {"flags": flags, "mask": SVC_FLAGS_MASK}),
           ("IPVS_SVC_ATTR_TIMEOUT", timeout), ("IPVS_SVC_ATTR_NETMASK", netmask)]
    if svc.persistence is not None and svc.persistence.engine is not None:
        out.append(("IPVS_SVC_ATTR_PE_NAME", svc.persistence.engine.value))
    return out


def dest_key_attrs(address: IPAddress, port: int) -> Attrs:
    """What identifies a dest within its service (DEL_DEST needs no more)."""
    return [("IPVS_DEST_ATTR_ADDR", _addr(address)), ("IPVS_DEST_ATTR_PORT", port),
            ("IPVS_DEST_ATTR_ADDR_FAMILY", _AF[address.version])]


def dest_attrs(rs: RealServer) -> Attrs:
    """Every attribute NEW_DEST and SET_DEST require, and the tunnel's."""
    out = [*dest_key_attrs(rs.address, rs.port),
           ("IPVS_DEST_ATTR_FWD_METHOD", rs.forward.kernel_code), ("IPVS_DEST_ATTR_WEIGHT", rs.weight),
           ("IPVS_DEST_ATTR_U_THRESH", rs.u_threshold), ("IPVS_DEST_ATTR_L_THRESH", rs.l_threshold)]
    if rs.tunnel is not None:
        flags = {"nocsum": 0, "csum": TUN_F_CSUM, "remcsum": TUN_F_REMCSUM}[rs.tunnel.checksum.value]
        out += [("IPVS_DEST_ATTR_TUN_TYPE", _TUN_TYPES[rs.tunnel.type]),
                ("IPVS_DEST_ATTR_TUN_PORT", rs.tunnel.port), ("IPVS_DEST_ATTR_TUN_FLAGS", flags)]
    return out


def timeout_attrs(t: Timeouts) -> Attrs:
    return [("IPVS_CMD_ATTR_TIMEOUT_TCP", t.tcp), ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", t.tcpfin),
            ("IPVS_CMD_ATTR_TIMEOUT_UDP", t.udp)]


def service_nest(key: ServiceKey) -> Attrs:
    """The SERVICE nest that names one service, as GET_SERVICE, GET_DEST and ZERO take it."""
    return [("IPVS_CMD_ATTR_SERVICE", {"attrs": service_key_attrs(key)})]


def request(op: Op) -> tuple[int, Attrs] | None:
    """The one netlink request of an op; None for an op that is no IPVS command (SetSysctls
    writes /proc/sys/net/ipv4/vs; rules are netfilter's)."""
    if isinstance(op, (AddService, EditService)):
        cmd = CMD_NEW_SERVICE if isinstance(op, AddService) else CMD_SET_SERVICE
        return cmd, [("IPVS_CMD_ATTR_SERVICE", {"attrs": service_attrs(op.service)})]
    if isinstance(op, DeleteService):
        return CMD_DEL_SERVICE, service_nest(op.key)
    if isinstance(op, DeleteRealServer):
        return CMD_DEL_DEST, [*service_nest(op.key),
                              ("IPVS_CMD_ATTR_DEST", {"attrs": dest_key_attrs(op.address, op.port)})]
    if isinstance(op, (AddRealServer, EditRealServer)):
        cmd = CMD_NEW_DEST if isinstance(op, AddRealServer) else CMD_SET_DEST
        return cmd, [*service_nest(op.key), ("IPVS_CMD_ATTR_DEST", {"attrs": dest_attrs(op.real_server)})]
    if isinstance(op, SetTimeouts):
        return CMD_SET_CONFIG, timeout_attrs(op.timeouts)
    if isinstance(op, (SetSysctls, AddRule, DeleteRule)):
        return None
    assert_never(op)


#: The sync daemon's states (IP_VS_STATE_MASTER, IP_VS_STATE_BACKUP), by ipvsadm's names.
DAEMON_STATES = {"master": 1, "backup": 2}


def daemon_nest(state: str, interface: str | None = None, syncid: int = 0) -> Attrs:
    """The DAEMON nest of NEW_DAEMON (with ``interface``) or DEL_DAEMON (without)."""
    attrs_: Attrs = [("IPVS_DAEMON_ATTR_STATE", DAEMON_STATES[state])]
    if interface is not None:
        attrs_ += [("IPVS_DAEMON_ATTR_MCAST_IFN", interface), ("IPVS_DAEMON_ATTR_SYNC_ID", syncid)]
    return [("IPVS_CMD_ATTR_DAEMON", {"attrs": attrs_})]


def parse_daemon(msg: Any) -> dict[str, Any]:
    """One GET_DAEMON reply: state ("master", "backup", or the number), interface, syncid."""
    nest = msg.get_attr("IPVS_CMD_ATTR_DAEMON")
    state = nest.get_attr("IPVS_DAEMON_ATTR_STATE")
    names = {v: k for k, v in DAEMON_STATES.items()}
    return {"state": names.get(state, str(state)), "interface": nest.get_attr("IPVS_DAEMON_ATTR_MCAST_IFN"),
            "syncid": nest.get_attr("IPVS_DAEMON_ATTR_SYNC_ID")}


@attrs.frozen
class KernelService:
    """A service as a GET_SERVICE reply carries it: its key, and what lbcore can model of it."""

    key: ServiceKey
    service: VirtualService | None  # None: the kernel holds something lbcore cannot express
    stats: dict[str, int]


def _flags_of(scheduler: Scheduler, flags: int) -> list[SchedulerFlag] | None:
    out = []
    for flag in SchedulerFlag:
        if flags & flag.bit and flag.scheduler is scheduler:
            out.append(flag)
    leftover = flags & (SVC_F_SCHED1 | SVC_F_SCHED2 | 0x20) & ~sum(f.bit for f in out)
    return None if leftover else out


def _stats_of(nest: Any) -> dict[str, int]:
    if nest is None:
        return {}
    return {name[len("IPVS_STATS_ATTR_"):].lower(): value for name, value in nest["attrs"]}


def parse_service(msg: Any) -> KernelService:
    """A NEW_SERVICE reply to lbcore's model; ``service`` is None if it cannot be modelled."""
    nest = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
    get = nest.get_attr
    family = 4 if get("IPVS_SVC_ATTR_AF") == socket.AF_INET else 6
    fwmark = get("IPVS_SVC_ATTR_FWMARK") or 0
    protocol = address = None
    port = 0
    if not fwmark:
        protocol = _PROTO.get(get("IPVS_SVC_ATTR_PROTOCOL"))
        address = _read_addr(get("IPVS_SVC_ATTR_ADDR"), _AF[family])
        port = get("IPVS_SVC_ATTR_PORT")
    stats = _stats_of(get("IPVS_SVC_ATTR_STATS64"))
    key = ServiceKey(family, protocol, address, port, fwmark)
    if not fwmark and protocol is None:
        return KernelService(key, None, stats)
    try:
        scheduler = Scheduler(get("IPVS_SVC_ATTR_SCHED_NAME"))
    except ValueError:  # "none", or a scheduler lbcore does not know
        return KernelService(key, None, stats)
    flags = get("IPVS_SVC_ATTR_FLAGS")["flags"]
    sched_flags = _flags_of(scheduler, flags)
    if sched_flags is None:
        return KernelService(key, None, stats)
    persistence = None
    if flags & SVC_F_PERSISTENT:
        raw = get("IPVS_SVC_ATTR_NETMASK")
        mask: Any = ipaddress.IPv4Address(raw[:4]) if family == 4 else struct.unpack("=I", raw[:4])[0]
        engine = get("IPVS_SVC_ATTR_PE_NAME")
        host = Persistence().prefix(family)
        persistence = Persistence(timeout=get("IPVS_SVC_ATTR_TIMEOUT"), netmask=None if mask == host else mask,
                                  engine=PersistenceEngine(engine) if engine else None)
    svc = VirtualService(protocol=protocol, address=address, port=port, fwmark=fwmark or None, family=family,
                         scheduler=scheduler, flags=sched_flags, persistence=persistence,
                         one_packet=bool(flags & SVC_F_ONEPACKET))
    return KernelService(key, svc, stats)


@attrs.frozen
class KernelDest:
    """A dest as a GET_DEST reply carries it."""

    real_server: RealServer
    active: int
    inactive: int
    persistent: int
    stats: dict[str, int]


def parse_dest(msg: Any, service_family: int) -> KernelDest:
    """A NEW_DEST reply to a RealServer and its counters."""
    nest = msg.get_attr("IPVS_CMD_ATTR_DEST")
    get = nest.get_attr
    af = get("IPVS_DEST_ATTR_ADDR_FAMILY") or _AF[service_family]
    forward = _FWD.get(get("IPVS_DEST_ATTR_FWD_METHOD") & 7, ForwardMethod.DR)
    tunnel = None
    if forward is ForwardMethod.TUNNEL:
        ttype = {v: k for k, v in _TUN_TYPES.items()}[get("IPVS_DEST_ATTR_TUN_TYPE") or 0]
        tflags = get("IPVS_DEST_ATTR_TUN_FLAGS") or 0
        checksum = "nocsum" if ttype is TunnelType.IPIP else (
            "remcsum" if tflags & TUN_F_REMCSUM else "csum" if tflags & TUN_F_CSUM else "nocsum")
        tunnel = Tunnel(type=ttype, port=get("IPVS_DEST_ATTR_TUN_PORT") if ttype is TunnelType.GUE else 0,
                        checksum=checksum)
    weight = get("IPVS_DEST_ATTR_WEIGHT")
    rs = RealServer(address=_read_addr(get("IPVS_DEST_ATTR_ADDR"), af), port=get("IPVS_DEST_ATTR_PORT"),
                    weight=weight, forward=forward, u_threshold=get("IPVS_DEST_ATTR_U_THRESH"),
                    l_threshold=get("IPVS_DEST_ATTR_L_THRESH"), tunnel=tunnel)
    return KernelDest(rs, get("IPVS_DEST_ATTR_ACTIVE_CONNS"), get("IPVS_DEST_ATTR_INACT_CONNS"),
                      get("IPVS_DEST_ATTR_PERSIST_CONNS"), _stats_of(get("IPVS_DEST_ATTR_STATS64")))


def parse_timeouts(msg: Any) -> Timeouts:
    get = msg.get_attr
    return Timeouts(get("IPVS_CMD_ATTR_TIMEOUT_TCP"), get("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN"),
                    get("IPVS_CMD_ATTR_TIMEOUT_UDP"))


# -- encoding -----------------------------------------------------------------------------------------
# pyroute2 encodes a message in ~150 us; a bulk apply sends tens of thousands, so requests are
# packed here with struct, from the same attribute tables the decoder uses.

_PACK = {"uint8": "=B", "uint16": "=H", "uint32": "=I", "uint64": "=Q", "be16": ">H"}


def _types(cls: Any) -> dict[str, tuple[int, str, Any]]:
    """attribute name -> (type number, kind, nested class) from a pyroute2 nla_map."""
    out = {}
    for number, (name, kind) in enumerate(cls.nla_map):
        out[name] = (number, kind, getattr(cls, kind, None))
    return out


_SCHEMA: dict[Any, dict[str, tuple[int, str, Any]]] = {}


def _schema(cls: Any) -> dict[str, tuple[int, str, Any]]:
    if cls not in _SCHEMA:
        _SCHEMA[cls] = _types(cls)
    return _SCHEMA[cls]


def _attrs(cls: Any, attrs_: Attrs) -> bytes:
    out = []
    schema = _schema(cls)
    for name, value in attrs_:
        number, kind, nested = schema[name]
        if kind in _PACK:
            payload = struct.pack(_PACK[kind], value)
        elif kind == "asciiz":
            payload = value.encode() + b"\0"
        elif kind == "cdata":
            payload = value
        elif kind == "flags":
            payload = struct.pack("=II", value["flags"], value["mask"])
        else:  # a nested attribute set
            payload = _attrs(nested, value["attrs"])
        length = 4 + len(payload)
        out.append(struct.pack("=HH", length, number) + payload + b"\0" * (-length % 4))
    return b"".join(out)


def encode(cmd: int, attrs_: Attrs, family: int, flags: int, seq: int) -> bytes:
    """One IPVS request: nlmsghdr, genlmsghdr, attributes."""
    body = struct.pack("=BBH", cmd, VERSION, 0) + _attrs(ipvs_msg, attrs_)
    return struct.pack("=IHHII", 16 + len(body), family, flags, seq, 0) + body
