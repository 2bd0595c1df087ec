"""ipvsadm's listings, in ipvsadm 1.31's and the kernel's exact text, from a neutral snapshot.

These are the two reports of the Loadbalancer.org guide: "Layer 4 Status" (``ipvsadm -Ln`` and its
``--stats``, ``--rate``, ``--thresholds``, ``--persistent-conn``, ``--tun-info``, ``--exact`` and
``--nosort`` variants, :func:`status`) and "Layer 4 Current Connections" (``ipvsadm -Lnc``,
:func:`connections`), plus ``ipvsadm -L --timeout`` (:func:`timeout`) and the file ``-Lnc`` is
made from, ``/proc/net/ip_vs_conn`` (:func:`proc_ip_vs_conn`, read back by
:func:`parse_proc_ip_vs_conn`).

They render a :class:`Snapshot`: plain values (:class:`ServiceStats`, :class:`RealServerStats`,
:class:`Stats`, :class:`ConnectionEntry`) that any backend with a data plane produces, the
simulator from its model of the kernel and the ipvs backend from the kernel itself (see
:class:`lbcore.backend.Listings`), so the same report reads the same from either.

Orders: services are listed in ipvsadm's sort and real servers by address, unless ``nosort``,
which keeps the snapshot's order (the kernel's: services in its hash order, real servers newest
first). Connections are listed in the snapshot's order; the kernel's is its hash table's, whose
seed is random, and the simulator's snapshot sorts them instead (see :mod:`lbcore.sim`).

.. versionadded:: 0.1
.. versionchanged:: 0.3 moved from ``lbcore.sim.report``; renders a :class:`Snapshot`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import attrs

from lbcore._fields import ascii_int
from lbcore._ints import i32
from lbcore.enums import ForwardMethod, TunnelChecksum, TunnelType
from lbcore.errors import ParseError
from lbcore.formats.ipvsadm import sorted_real_servers, sorted_services
from lbcore.model import IPAddress, RealServer, Timeouts, VirtualService, format_endpoint

__all__ = [
    "ConnectionEntry",
    "RealServerStats",
    "ServiceStats",
    "Snapshot",
    "Stats",
    "connections",
    "parse_proc_ip_vs_conn",
    "proc_ip_vs_conn",
    "status",
    "timeout",
]

#: list_all()'s first line: IP_VS_VERSION_CODE is 1.2.1; size is the connection table's buckets.
VERSION_LINE = "IP Virtual Server version 1.2.1 (size={})\n"
#: ip_vs_conn_seq_show()'s header.
PROC_CONN_HEADER = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"

# IP_VS_SVC_F_SCHED1/2/3: ipvsadm names them after the scheduler (print_sched_flags()).
_SCHED_FLAGS = (0x08, 0x10, 0x20)
_SCHED_FLAG_NAMES = {
    "sh": ("sh-fallback", "sh-port"),
    "mh": ("mh-fallback", "mh-port"),
}
_GENERIC_FLAG_NAMES = ("flag-1", "flag-2", "flag-3")
TCP, UDP, SCTP = 6, 17, 132
# ipvsadm's protocol_name() for service lines; the kernel's ip_vs_proto_name() for connections.
_SERVICE_PROTOCOLS = {TCP: "TCP", UDP: "UDP", SCTP: "SCTP"}
_CONN_PROTOCOLS = {0: "IP", 1: "ICMP", TCP: "TCP", UDP: "UDP", SCTP: "SCTP", 58: "ICMPv6"}
_CONN_PROTOCOL_NUMBERS = {name: number for number, name in _CONN_PROTOCOLS.items()}
# fwd_tun_info(): tunflags[] indexed by the IP_VS_TUNNEL_ENCAP_FLAG_* value.
_TUNNEL_CHECKSUMS = {TunnelChecksum.NOCSUM: "-c", TunnelChecksum.CSUM: "+c", TunnelChecksum.REMCSUM: "r+c"}

_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1


# -- the snapshot --------------------------------------------------------------------------------


@attrs.frozen
class Stats:
    """One set of IPVS statistics as the kernel shows them (struct ip_vs_kstats).

    Counters (conns, packets and bytes, in and out) count since the last ``ipvsadm -Z``; rates
    are the estimator's averages per second. Both are what the estimator last took (every 2 s).

    .. versionadded:: 0.3
    """

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0

    def counters(self) -> tuple[int, int, int, int, int]:
        """Conns, InPkts, OutPkts, InBytes, OutBytes: the ``--stats`` columns."""
        return (self.conns, self.inpkts, self.outpkts, self.inbytes, self.outbytes)

    def rates(self) -> tuple[int, int, int, int, int]:
        """CPS, InPPS, OutPPS, InBPS, OutBPS: the ``--rate`` columns."""
        return (self.cps, self.inpps, self.outpps, self.inbps, self.outbps)


@attrs.frozen
class RealServerStats:
    """A real server as the data plane holds it now: its settings, connections and statistics.

    Attributes:
        real_server: its settings (address, port, forward method, weight, thresholds, tunnel).
        active: ActiveConn, connections in ESTABLISHED (TCP) or the like.
        inactive: InActConn, the other connections (closing, UDP, half open).
        persistent: PersistConn, persistence templates that point to it.
        stats: its statistics.

    .. versionadded:: 0.3
    """

    real_server: RealServer
    active: int = 0
    inactive: int = 0
    persistent: int = 0
    stats: Stats = Stats()

    @property
    def key(self) -> tuple[IPAddress, int]:
        """The real server's (address, port)."""
        return self.real_server.key


def _real_servers(values: Iterable[RealServerStats]) -> tuple[RealServerStats, ...]:
    return tuple(values)


@attrs.frozen
class ServiceStats:
    """A virtual service as the data plane holds it now: settings, real servers, statistics.

    Attributes:
        service: its settings (its ``real_servers`` are not read: see ``real_servers``).
        real_servers: its real servers in the data plane's order (the kernel's: newest first).
        stats: the service's statistics.

    .. versionadded:: 0.3
    """

    service: VirtualService
    real_servers: tuple[RealServerStats, ...] = attrs.field(default=(), converter=_real_servers)
    stats: Stats = Stats()


@attrs.frozen
class ConnectionEntry:
    """One connection or persistence template, as ``/proc/net/ip_vs_conn`` lists it.

    Attributes:
        protocol: the IP protocol number (6 TCP, 17 UDP, 132 SCTP; 0 for a fwmark template).
        client, client_port: the client's side (port 0 in a persistence template).
        virtual, virtual_port: the virtual service's side; a fwmark template holds the mark as
            the first 32 bits of an address of the client's family, and port 0.
        destination, destination_port: the real server it goes to.
        state: the kernel's name for its state (``ESTABLISHED``, ``FIN_WAIT``, ``UDP``; a
            template is ``NONE`` or ``ASSURED``).
        expires: whole seconds left before it expires.
        pe_name, pe_data: the persistence engine's name and data ("" without one).

    .. versionadded:: 0.3
    """

    protocol: int
    client: IPAddress
    client_port: int
    virtual: IPAddress
    virtual_port: int
    destination: IPAddress
    destination_port: int
    state: str
    expires: int
    pe_name: str = ""
    pe_data: str = ""


def _services(values: Iterable[ServiceStats]) -> tuple[ServiceStats, ...]:
    return tuple(values)


def _connections(values: Iterable[ConnectionEntry]) -> tuple[ConnectionEntry, ...]:
    return tuple(values)


@attrs.frozen
class Snapshot:
    """What ipvsadm's listings show of one data plane at one instant.

    Attributes:
        services: the virtual services in the data plane's order (``--nosort`` keeps it).
        connections: the connection table in the order to list it.
        timeouts: the tcp, tcpfin and udp timeouts.
        conn_tab_size: the buckets of the kernel's connection table (the version line's size).

    A backend may leave out what a listing does not need: its ``status()`` need not read the
    connections, nor its ``connections()`` the services.

    .. versionadded:: 0.3
    """

    services: tuple[ServiceStats, ...] = attrs.field(default=(), converter=_services)
    connections: tuple[ConnectionEntry, ...] = attrs.field(default=(), converter=_connections)
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    conn_tab_size: int = 4096


# -- ipvsadm -Ln ---------------------------------------------------------------------------------


def status(snapshot: Snapshot, *, stats: bool = False, rate: bool = False, thresholds: bool = False,
           persistent_conn: bool = False, tun_info: bool = False, exact: bool = False,
           nosort: bool = False) -> str:
    """``ipvsadm -Ln`` of a snapshot, with the options ipvsadm 1.31 takes.

    When several formats are asked for, the first of stats, rate, thresholds, persistent_conn,
    tun_info wins, as in ipvsadm's print_title().

    Args:
        snapshot: the services to list (its connections are not read).
        stats: ``--stats``: Conns, InPkts, OutPkts, InBytes, OutBytes.
        rate: ``--rate``: CPS, InPPS, OutPPS, InBPS, OutBPS.
        thresholds: ``--thresholds``: Uthreshold, Lthreshold, ActiveConn, InActConn.
        persistent_conn: ``--persistent-conn``: Weight, PersistConn, ActiveConn, InActConn.
        tun_info: ``--tun-info``: the tunnel type and options of each real server.
        exact: ``--exact``: statistics in full instead of K, M, G, T units.
        nosort: ``--nosort``: services and real servers in the snapshot's order.

    Returns:
        The listing, one line per ``\\n``, starting with the version line.

    Raises:
        Nothing: every snapshot can be listed.
    """
    mode = next((name for name, on in (("stats", stats), ("rate", rate), ("thresholds", thresholds),
                                        ("persistent_conn", persistent_conn), ("tun_info", tun_info))
                 if on), "default")
    out = [VERSION_LINE.format(snapshot.conn_tab_size), _TITLES[mode]]
    for svc in _listed_services(snapshot.services, nosort):
        out.append(_service_line(svc, mode, exact))
        real_servers = svc.real_servers if nosort else sorted_real_servers(svc.real_servers)
        out.extend(_real_server_line(rs, mode, exact) for rs in real_servers)
    return "".join(out)


def timeout(snapshot: Snapshot) -> str:
    """``ipvsadm -L --timeout``: the tcp, tcpfin and udp timeouts in seconds.

    Raises:
        Nothing.
    """
    t = snapshot.timeouts
    return f"Timeout (tcp tcpfin udp): {t.tcp} {t.tcpfin} {t.udp}\n"


def layer4_status(snapshot: Snapshot) -> str:
    """The guide's "Layer 4 Status": ``ipvsadm -Ln --stats``, then ``ipvsadm -Ln``.

    Raises:
        Nothing.

    .. versionadded:: 0.3
    """
    return f"{status(snapshot, stats=True)}\n{status(snapshot)}"


def layer4_report(snapshot: Snapshot) -> str:
    """Both of the guide's reports, titled: "Layer 4 Status", then "Layer 4 Current Connections".

    Raises:
        Nothing.

    .. versionadded:: 0.3
    """
    return f"Layer 4 Status\n{layer4_status(snapshot)}\nLayer 4 Current Connections\n{connections(snapshot)}"


_STATS_TITLE = "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port\n"
_TITLES = {
    "stats": _STATS_TITLE.format("Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes",
                                 "OutBytes"),
    "rate": _STATS_TITLE.format("Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"),
    "thresholds": "{:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port\n".format(
        "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"),
    "persistent_conn": "{:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port\n".format(
        "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn"),
    "tun_info": "Prot LocalAddress:Port Scheduler Flags\n"
                "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n",
    "default": "Prot LocalAddress:Port Scheduler Flags\n"
               "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
}


def _listed_services(services: tuple[ServiceStats, ...], nosort: bool) -> list[ServiceStats]:
    if nosort:
        return list(services)
    # Sort the services with ipvsadm's own comparator; services with one key are one service.
    by_key = {svc.service.key: svc for svc in services}
    return [by_key[config.key] for config in sorted_services(svc.service for svc in services)]


def _service_name(svc: VirtualService) -> str:
    """print_service_entry()'s svc_name: ``TCP  192.0.2.10:80`` or ``FWM  1``."""
    if svc.fwmark:
        mark = i32(svc.fwmark)  # 1.31 prints it with %d
        return f"FWM  {mark}" + (" IPv6" if svc.family == 6 else "")
    assert svc.protocol is not None and svc.address is not None
    name = f"{_SERVICE_PROTOCOLS.get(svc.protocol.number, '?'):<4} {_endpoint(svc.address, svc.port)}"
    return name if svc.family == 6 else name[:33]


def _sched_flags(svc: VirtualService) -> str:
    bits = sum(flag.bit for flag in svc.flags)
    names = _SCHED_FLAG_NAMES.get(svc.scheduler.value, _GENERIC_FLAG_NAMES)
    return ",".join(name for bit, name in zip(_SCHED_FLAGS, names) if bits & bit)


def _service_line(stats: ServiceStats, mode: str, exact: bool) -> str:
    svc = stats.service
    name = _service_name(svc)
    if mode in ("stats", "rate"):
        values = stats.stats.counters() if mode == "stats" else stats.stats.rates()
        return f"{name:<33}" + "".join(_largenum(v, exact) for v in values) + "\n"
    line = f"{name} {svc.scheduler.value}"
    flags = _sched_flags(svc)
    if flags:
        line += f" ({flags})"
    persistence = svc.persistence
    if persistence is not None:
        line += f" persistent {persistence.timeout}"
        netmask = persistence.prefix(svc.family)
        if svc.family == 4 and int(netmask) != _U32:
            line += f" mask {netmask}"
        elif svc.family == 6 and int(netmask) != 128:
            line += f" mask {int(netmask)}"
        if persistence.engine is not None:
            line += f" pe {persistence.engine.value}"
    if svc.one_packet:
        line += " ops"
    return line + "\n"


def _real_server_line(stats: RealServerStats, mode: str, exact: bool) -> str:
    rs = stats.real_server
    name = _endpoint(rs.address, rs.port)
    if rs.address.version != 6:
        name = name[:28]
    # ActiveConn and friends are C ints printed with %u.
    active, inactive, persist = stats.active & _U32, stats.inactive & _U32, stats.persistent & _U32
    if mode == "stats":
        return f"  -> {name:<28}" + "".join(_largenum(v, exact) for v in stats.stats.counters()) + "\n"
    if mode == "rate":
        cps, inpps, outpps, inbps, outbps = stats.stats.rates()
        # The dest line prints the packet rates plainly (%8llu) and only the byte rates as largenum.
        return (f"  -> {name:<28} {cps:8d} {inpps:8d} {outpps:8d}"
                f"{_largenum(inbps, exact)}{_largenum(outbps, exact)}\n")
    if mode == "thresholds":
        return (f"  -> {name:<28} {rs.u_threshold & _U32:<10d} {rs.l_threshold & _U32:<10d} "
                f"{active:<10d} {inactive:<10d}\n")
    if mode == "persistent_conn":
        return f"  -> {name:<28} {rs.weight:<9d} {persist:<11d} {active:<10d} {inactive:<10d}\n"
    forward = rs.forward.ipvsadm_name
    if mode == "tun_info":
        return (f"  -> {name:<28} {forward:<7} {_tunnel_info(rs):<13} {rs.weight:<6d} "
                f"{active:<10d} {inactive:<10d}\n")
    return f"  -> {name:<28} {forward:<7} {rs.weight:<6d} {active:<10d} {inactive:<10d}\n"


def _tunnel_info(rs: RealServer) -> str:
    """fwd_tun_info(): ``ipip``, ``gue:<port>:<-c|+c|r+c>``, ``gre:<-c|+c>``; ``n/a`` if no tunnel."""
    t = rs.tunnel
    if rs.forward is not ForwardMethod.TUNNEL or t is None:
        return "n/a"
    checksum = _TUNNEL_CHECKSUMS[t.checksum]
    if t.type is TunnelType.GUE:
        return f"gue:{t.port}:{checksum}"
    if t.type is TunnelType.GRE:
        return f"gre:{checksum}"
    return str(t.type)


def _largenum(value: int, exact: bool) -> str:
    """print_largenum(): 9 columns, in K, M, G or T units past 10^8; ``exact`` prints it in full."""
    n = value & _U64
    if exact:
        text = str(n)
        return text.rjust(9 if len(text) <= 8 else len(text) + 1)
    if n < 10**8:
        return f"{n:9d}"
    if n < 10**9:
        return f"{n // 10**3:8d}K"
    if n < 10**11:
        return f"{n // 10**6:8d}M"
    if n < 10**14:
        return f"{n // 10**9:8d}G"
    return f"{n // 10**12:8d}T"


def _endpoint(address: IPAddress, port: int) -> str:
    """addrport_to_anyname() with -n: ``a.b.c.d:port`` or ``[v6]:port``, v6 as glibc's inet_ntop."""
    if address.version == 4:
        return format_endpoint(address, port)
    return f"[{_inet_ntop6(address)}]:{port}"


def _inet_ntop6(address: IPAddress) -> str:
    # Python compresses like glibc (longest run of two or more zero groups, first one on a tie),
    # but glibc also writes the last 32 bits of ::a.b.c.d and ::ffff:a.b.c.d dotted.
    value = int(address)
    high, low = value >> 32, value & _U32
    if (high == 0 and low >> 16) or high == 0xFFFF:
        prefix = "::" if high == 0 else "::ffff:"
        return prefix + str(ipaddress.IPv4Address(low))
    return str(address)


# -- /proc/net/ip_vs_conn and ipvsadm -Lnc -----------------------------------------------------------


def proc_ip_vs_conn(snapshot: Snapshot) -> str:
    """``/proc/net/ip_vs_conn``: every connection and template in the kernel's hex format.

    Addresses and ports are upper-case hex (IPv6 addresses in full, lower case), the state is the
    protocol's (templates show NONE or ASSURED) and Expires is the remaining time in whole
    seconds. Lines come in the snapshot's order.

    Raises:
        Nothing.
    """
    return PROC_CONN_HEADER + "".join(_proc_line(entry) for entry in snapshot.connections)


def _proc_line(entry: ConnectionEntry) -> str:
    """ip_vs_conn_seq_show() for one entry."""
    protocol = _CONN_PROTOCOLS.get(entry.protocol, f"IP_{entry.protocol}")
    caddr, vaddr, daddr = entry.client, entry.virtual, entry.destination
    dest = f"{int(daddr):08X}" if daddr.version == 4 else daddr.exploded
    if caddr.version == 4:
        ends = f"{int(caddr):08X} {entry.client_port:04X} {int(vaddr):08X} {entry.virtual_port:04X}"
    else:
        ends = f"{caddr.exploded} {entry.client_port:04X} {vaddr.exploded} {entry.virtual_port:04X}"
    # The kernel appends " <pe name> <pe data>" to Expires for an entry with persistence engine data.
    pe = f" {entry.pe_name} {entry.pe_data}" if entry.pe_name else ""
    return (f"{protocol:<3} {ends} {dest} {entry.destination_port:04X} {entry.state:<11} "
            f"{entry.expires:7d}{pe}\n")


def parse_proc_ip_vs_conn(text: str) -> tuple[ConnectionEntry, ...]:
    """The entries of a ``/proc/net/ip_vs_conn`` text, in its order, read as ipvsadm 1.31 reads it.

    Args:
        text: the file's content, header line included.

    Raises:
        ParseError: a line is not in the file's format; names the line and the token.
    """
    entries = []
    for number, raw in enumerate(text.splitlines()[1:], 2):
        fields = raw.split()
        if not fields:
            continue
        where = f"/proc/net/ip_vs_conn line {number}"
        if len(fields) < 9:
            raise ParseError(where, "line", raw, "has fewer than 9 fields")
        name, caddr, cport, vaddr, vport, daddr, dport, state, expires = fields[:9]
        client = _proc_address(where, "FromIP", caddr)
        entries.append(ConnectionEntry(
            protocol=_proc_protocol(where, name),
            client=client,
            client_port=_proc_number(where, "FPrt", cport, 16),
            # print_conn() reads the virtual address in the client's family, the destination alone.
            virtual=_proc_address(where, "ToIP", vaddr, client.version),
            virtual_port=_proc_number(where, "TPrt", vport, 16),
            destination=_proc_address(where, "DestIP", daddr),
            destination_port=_proc_number(where, "DPrt", dport, 16),
            state=state,
            expires=_proc_number(where, "Expires", expires, 10),
            pe_name=fields[9] if len(fields) > 9 else "",
            pe_data=fields[10] if len(fields) > 10 else "",
        ))
    return tuple(entries)


def _proc_protocol(where: str, name: str) -> int:
    if name in _CONN_PROTOCOL_NUMBERS:
        return _CONN_PROTOCOL_NUMBERS[name]
    number = ascii_int(name[3:]) if name.startswith("IP_") else None
    if number is not None:
        return number
    raise ParseError(where, "Pro", name, "is not a protocol the kernel names")


def _proc_number(where: str, field: str, text: str, base: int) -> int:
    try:
        if not text.isascii():  # int() takes any Unicode digit; the kernel writes ASCII
            raise ValueError(text)
        return int(text, base)
    except ValueError:
        raise ParseError(where, field, text, f"is not a base-{base} number") from None


def _proc_address(where: str, field: str, text: str, family: int | None = None) -> IPAddress:
    """print_conn(): an IPv6 address as it stands, else the hex of an IPv4 one."""
    try:
        if not text.isascii() or "%" in text:
            raise ValueError(text)
        if family != 4 and ":" in text:
            return ipaddress.IPv6Address(text)
        return ipaddress.IPv4Address(int(text, 16))
    except ValueError:
        raise ParseError(where, field, text, "is not an address in the file's format") from None


def connections(snapshot: Snapshot, *, persistent_conn: bool = False) -> str:
    """``ipvsadm -Lnc``: every connection and template, with its remaining time as mm:ss.

    This is ipvsadm's list_conn(), which reads ``/proc/net/ip_vs_conn`` and prints each line
    again (print_conn()), made from the entries that file lists.

    Args:
        snapshot: the connections to list (its services are not read).
        persistent_conn: ``--persistent-conn``: the header adds the persistence engine columns,
            and entries that carry persistence engine data show it.

    Raises:
        Nothing.
    """
    out = ["IPVS connection entries\n"]
    if persistent_conn:
        out.append("pro expire {:<11} {:<18} {:<18} {:<18} {:<16} {}\n".format(
            "state", "source", "virtual", "destination", "pe name", "pe_data"))
    else:
        out.append("pro expire {:<11} {:<18} {:<18} {}\n".format("state", "source", "virtual", "destination"))
    for entry in snapshot.connections:
        protocol = _CONN_PROTOCOLS.get(entry.protocol, f"IP_{entry.protocol}")
        source = _endpoint(entry.client, entry.client_port)
        virtual = _endpoint(entry.virtual, entry.virtual_port)
        destination = _endpoint(entry.destination, entry.destination_port)
        secs = entry.expires
        mmss = f"{secs // 60:02d}:{secs % 60:02d}"
        line = f"{protocol:<3} {mmss:<6} {entry.state:<11} {source:<18} {virtual:<18} "
        if persistent_conn and entry.pe_name:
            line += f"{destination:<16} {entry.pe_name:<18} {entry.pe_data}"
        else:
            line += destination
        out.append(line + "\n")
    return "".join(out)
