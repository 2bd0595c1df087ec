"""ipvsadm's listings of the simulated director, in ipvsadm 1.31's and the kernel's exact text.

These are the two reports of the Loadbalancer.org guide: "Layer 4 Status" (``ipvsadm -Ln`` and its
``--stats``, ``--rate``, ``--thresholds``, ``--persistent-conn``, ``--tun-info``, ``--exact`` and
``--nosort`` variants, :func:`status`) and "Layer 4 Current Connections" (``ipvsadm -Lnc``,
:func:`connections`), plus ``ipvsadm -L --timeout`` (:func:`timeout`) and the file ``-Lnc`` is
made from, ``/proc/net/ip_vs_conn`` (:func:`proc_ip_vs_conn`).

Every listing first fires the timers that are due, as the kernel's would have fired by the time
it is read. What differs from a kernel, on purpose:

* The kernel lists connections in the order of its hash table, whose seed is random (ipvs-notes
  §4.1). lbcore lists them sorted: by protocol number, then source, then virtual, then
  destination, each by family (IPv4 first), address and port.
* ``--nosort`` lists services in the order they were added (the kernel's is its hash order) and
  real servers in list order, newest first, as the kernel does.

.. versionadded:: 0.1
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from lbcore.enums import ForwardMethod, TunnelChecksum, TunnelType
from lbcore.formats.ipvsadm import sorted_real_servers, sorted_services
from lbcore.model import IPAddress, format_endpoint
from lbcore.sim import tcp
from lbcore.sim.director import F_TEMPLATE, SCTP, TCP, UDP, Conn, Director
from lbcore.sim.state import SVC_ONEPACKET, SVC_PERSISTENT, Dest, SimService

__all__ = ["connections", "connections_from_proc", "proc_ip_vs_conn", "status", "timeout"]

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
# ipvsadm's protocol_name() for service lines; the kernel's ip_vs_proto_name() for connections.
_SERVICE_PROTOCOLS = {TCP: "TCP", UDP: "UDP", SCTP: "SCTP"}
_CONN_PROTOCOLS = {0: "IP", 1: "ICMP", TCP: "TCP", UDP: "UDP", SCTP: "SCTP", 58: "ICMPv6"}
# sctp_state_name_table[] (ip_vs_proto_sctp.c), indexed by IP_VS_SCTP_S_*.
_SCTP_STATE_NAMES = ("NONE", "INIT1", "INIT", "C-SENT", "C-REPLIED", "C-WAIT", "COOKIE",
                     "C-ECHOED", "ESTABLISHED", "S-SENT", "S-RECEIVED", "S-ACK-SENT", "REJECTED",
                     "CLOSED")
# ip_vs_ctpl_state_name_table[]: a template is NONE until a reply (or ESTABLISHED) assures it.
_TEMPLATE_STATE_NAMES = ("NONE", "ASSURED")
# fwd_tun_info(): tunflags[] indexed by the IP_VS_TUNNEL_ENCAP_FLAG_* value.
_TUNNEL_CHECKSUMS = {TunnelChecksum.NOCSUM: "-c", TunnelChecksum.CSUM: "+c", TunnelChecksum.REMCSUM: "r+c"}

_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1


# -- ipvsadm -Ln ---------------------------------------------------------------------------------


def status(director: Director, *, stats: bool = False, rate: bool = False, thresholds: bool = False,
           persistent_conn: bool = False, tun_info: bool = False, exact: bool = False,
           nosort: bool = False) -> str:
    """``ipvsadm -Ln`` of the director, with the options ipvsadm 1.31 takes.

    When several formats are asked for, the first of stats, rate, thresholds, persistent_conn,
    tun_info wins, as in ipvsadm's print_title(). Statistics are the estimator's last snapshot
    (taken every 2 s), minus the zero point of ``ipvsadm -Z``.

    Args:
        director: the simulated kernel.
        stats: ``--stats``: Conns, InPkts, OutPkts, InBytes, OutBytes.
        rate: ``--rate``: CPS, InPPS, OutPPS, InBPS, OutBPS.
        thresholds: ``--thresholds``: Uthreshold, Lthreshold, ActiveConn, InActConn.
        persistent_conn: ``--persistent-conn``: Weight, PersistConn, ActiveConn, InActConn.
        tun_info: ``--tun-info``: the tunnel type and options of each real server.
        exact: ``--exact``: statistics in full instead of K, M, G, T units.
        nosort: ``--nosort``: services in the order they were added, real servers newest first.

    Returns:
        The listing, one line per ``\\n``, starting with the version line.

    Raises:
        Nothing: every state the simulator holds can be listed.
    """
    director.run_timers(director.now())
    mode = next((name for name, on in (("stats", stats), ("rate", rate), ("thresholds", thresholds),
                                        ("persistent_conn", persistent_conn), ("tun_info", tun_info))
                 if on), "default")
    out = [VERSION_LINE.format(director.profile.conn_tab_size), _TITLES[mode]]
    for svc in _services(director, nosort):
        out.append(_service_line(svc, mode, exact))
        dests = svc.dests if nosort else sorted_real_servers(svc.dests)
        out.extend(_dest_line(dest, mode, exact) for dest in dests)
    return "".join(out)


def timeout(director: Director) -> str:
    """``ipvsadm -L --timeout``: the tcp, tcpfin and udp timeouts in seconds.

    Raises:
        Nothing.
    """
    t = director.get_timeouts()
    return f"Timeout (tcp tcpfin udp): {t.tcp} {t.tcpfin} {t.udp}\n"


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


def _services(director: Director, nosort: bool) -> list[SimService]:
    if nosort:
        return list(director.services.values())
    # Sort the configured services with ipvsadm's own comparator, then list the kernel's objects.
    return [director.services[config.key]
            for config in sorted_services(svc.config for svc in director.services.values())]


def _service_name(svc: SimService) -> str:
    """print_service_entry()'s svc_name: ``TCP  192.0.2.10:80`` or ``FWM  1``."""
    if svc.fwmark:
        mark = svc.fwmark - (1 << 32) if svc.fwmark >> 31 else svc.fwmark  # 1.31 prints it with %d
        return f"FWM  {mark}" + (" IPv6" if svc.family == 6 else "")
    config = svc.config
    assert config.protocol is not None and config.address is not None
    name = f"{_SERVICE_PROTOCOLS.get(config.protocol.number, '?'):<4} {_endpoint(config.address, svc.port)}"
    return name if svc.family == 6 else name[:33]


def _sched_flags(svc: SimService) -> str:
    names = _SCHED_FLAG_NAMES.get(svc.config.scheduler.value, _GENERIC_FLAG_NAMES)
    return ",".join(name for bit, name in zip(_SCHED_FLAGS, names) if svc.flags & bit)


def _service_line(svc: SimService, mode: str, exact: bool) -> str:
    name = _service_name(svc)
    if mode in ("stats", "rate"):
        values = svc.stats.counters() if mode == "stats" else svc.stats.rates()
        return f"{name:<33}" + "".join(_largenum(v, exact) for v in values) + "\n"
    line = f"{name} {svc.config.scheduler.value}"
    flags = _sched_flags(svc)
    if flags:
        line += f" ({flags})"
    if svc.flags & SVC_PERSISTENT:
        line += f" persistent {svc.timeout}"
        if svc.family == 4 and svc.netmask != _U32:
            line += f" mask {ipaddress.IPv4Address(svc.netmask)}"
        elif svc.family == 6 and svc.netmask != 128:
            line += f" mask {svc.netmask}"
        persistence = svc.config.persistence
        if persistence is not None and persistence.engine is not None:
            line += f" pe {persistence.engine.value}"
    if svc.flags & SVC_ONEPACKET:
        line += " ops"
    return line + "\n"


def _dest_line(dest: Dest, mode: str, exact: bool) -> str:
    name = _endpoint(dest.address, dest.port)
    if dest.family != 6:
        name = name[:28]
    # ActiveConn and friends are C ints printed with %u.
    active, inactive, persist = dest.activeconns & _U32, dest.inactconns & _U32, dest.persistconns & _U32
    if mode == "stats":
        return f"  -> {name:<28}" + "".join(_largenum(v, exact) for v in dest.stats.counters()) + "\n"
    if mode == "rate":
        cps, inpps, outpps, inbps, outbps = dest.stats.rates()
        # The dest line prints the packet rates plainly (%8llu) and only the byte rates as largenum.
        return (f"  -> {name:<28} {cps:8d} {inpps:8d} {outpps:8d}"
                f"{_largenum(inbps, exact)}{_largenum(outbps, exact)}\n")
    if mode == "thresholds":
        return (f"  -> {name:<28} {dest.u_threshold & _U32:<10d} {dest.l_threshold & _U32:<10d} "
                f"{active:<10d} {inactive:<10d}\n")
    if mode == "persistent_conn":
        return f"  -> {name:<28} {dest.weight:<9d} {persist:<11d} {active:<10d} {inactive:<10d}\n"
    forward = dest.forward.ipvsadm_name
    if mode == "tun_info":
        return (f"  -> {name:<28} {forward:<7} {_tunnel_info(dest):<13} {dest.weight:<6d} "
                f"{active:<10d} {inactive:<10d}\n")
    return f"  -> {name:<28} {forward:<7} {dest.weight:<6d} {active:<10d} {inactive:<10d}\n"


def _tunnel_info(dest: Dest) -> str:
    """fwd_tun_info(): ``ipip``, ``gue:<port>:<-c|+c|r+c>``, ``gre:<-c|+c>``; ``n/a`` if no tunnel."""
    t = dest.tunnel
    if dest.forward is not ForwardMethod.TUNNEL or t is None:
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


def proc_ip_vs_conn(director: Director) -> str:
    """``/proc/net/ip_vs_conn``: every connection and template in the kernel's hex format.

    Addresses and ports are upper-case hex (IPv6 addresses in full, lower case), the state is the
    protocol's (templates show NONE or ASSURED) and Expires is the remaining time in whole
    seconds. Lines are sorted as the module docstring says, not in the kernel's hash order.

    Raises:
        Nothing.
    """
    director.run_timers(director.now())
    now = director.now()
    hz = director.profile.hz
    return PROC_CONN_HEADER + "".join(_proc_line(cp, now, hz) for cp in _sorted_entries(director.entries()))


def connections(director: Director, *, persistent_conn: bool = False) -> str:
    """``ipvsadm -Lnc``: every connection and template, with its remaining time as mm:ss.

    Args:
        director: the simulated kernel.
        persistent_conn: ``--persistent-conn``: the header adds the persistence engine columns.

    Raises:
        Nothing.
    """
    return connections_from_proc(proc_ip_vs_conn(director), persistent_conn=persistent_conn)


def connections_from_proc(text: str, *, persistent_conn: bool = False) -> str:
    """``ipvsadm -Lnc`` made from the text of ``/proc/net/ip_vs_conn``, as ipvsadm 1.31 makes it.

    ipvsadm's list_conn() reads that file and prints each line again (print_conn()); this is the
    same translation, so a kernel backend can list from the real file.

    Args:
        text: the file's content, header line included.
        persistent_conn: ``--persistent-conn``: the header adds the persistence engine columns,
            and lines that carry persistence engine data show it.

    Raises:
        ValueError: a line is not in the file's format.
    """
    out = ["IPVS connection entries\n"]
    if persistent_conn:
        out.append("pro expire {:<11} {:<18} {:<18} {:<18} {:<16} {}\n".format(
            "state", "source", "virtual", "destination", "pe name", "pe_data"))
    else:
        out.append("pro expire {:<11} {:<18} {:<18} {}\n".format("state", "source", "virtual", "destination"))
    for raw in text.splitlines()[1:]:
        fields = raw.split()
        if not fields:
            continue
        if len(fields) < 9:
            raise ValueError(f"not a /proc/net/ip_vs_conn line: {raw!r}")
        protocol, caddr, cport, vaddr, vport, daddr, dport, state, expires = fields[:9]
        client = _proc_address(caddr)
        # The virtual address is read in the client's family, the destination on its own.
        source = _endpoint(client, int(cport, 16))
        virtual = _endpoint(_proc_address(vaddr, client.version), int(vport, 16))
        destination = _endpoint(_proc_address(daddr), int(dport, 16))
        secs = int(expires)
        mmss = f"{secs // 60:02d}:{secs % 60:02d}"
        line = f"{protocol:<3} {mmss:<6} {state:<11} {source:<18} {virtual:<18} "
        if persistent_conn and len(fields) >= 11:
            line += f"{destination:<16} {fields[9]:<18} {fields[10]}"
        else:
            line += destination
        out.append(line + "\n")
    return "".join(out)


def _proc_address(text: str, family: int | None = None) -> IPAddress:
    """print_conn(): an IPv6 address as it stands, else the hex of an IPv4 one."""
    if family != 4 and ":" in text:
        return ipaddress.IPv6Address(text)
    return ipaddress.IPv4Address(int(text, 16))


def _sorted_entries(entries: Iterable[Conn]) -> list[Conn]:
    def key(cp: Conn) -> tuple[int, ...]:
        caddr, vaddr, daddr = cp.caddr, _vaddr(cp), cp.daddr
        return (cp.protocol, caddr.version, int(caddr), cp.cport, vaddr.version, int(vaddr), cp.vport,
                daddr.version, int(daddr), cp.dport, cp.flags & F_TEMPLATE, cp.state)

    return sorted(entries, key=key)


def _vaddr(cp: Conn) -> IPAddress:
    """The virtual address; a fwmark template holds the mark as its first 32 bits instead."""
    vaddr = cp.vaddr
    if isinstance(vaddr, int):
        # union nf_inet_addr fwmark = { .ip = htonl(svc->fwmark) } (ip_vs_sched_persist()).
        if cp.caddr.version == 4:
            return ipaddress.IPv4Address(vaddr)
        return ipaddress.IPv6Address(vaddr << 96)
    assert isinstance(vaddr, (ipaddress.IPv4Address, ipaddress.IPv6Address))
    return vaddr


def _proc_line(cp: Conn, now: float, hz: int) -> str:
    """ip_vs_conn_seq_show() for one entry."""
    protocol = _CONN_PROTOCOLS.get(cp.protocol, f"IP_{cp.protocol}")
    caddr, vaddr, daddr = cp.caddr, _vaddr(cp), cp.daddr
    dest = f"{int(daddr):08X}" if daddr.version == 4 else daddr.exploded
    if caddr.version == 4:
        ends = f"{int(caddr):08X} {cp.cport:04X} {int(vaddr):08X} {cp.vport:04X}"
    else:
        ends = f"{caddr.exploded} {cp.cport:04X} {vaddr.exploded} {cp.vport:04X}"
    return f"{protocol:<3} {ends} {dest} {cp.dport:04X} {_state_name(cp):<11} {_expires(cp, now, hz):7d}\n"


def _state_name(cp: Conn) -> str:
    """ip_vs_state_name(): the template's or the protocol's name for the state."""
    state = cp.state
    if cp.flags & F_TEMPLATE:
        return _TEMPLATE_STATE_NAMES[state] if state < len(_TEMPLATE_STATE_NAMES) else "ERR!"
    names: tuple[str, ...]
    if cp.protocol == TCP:
        names = tcp.STATE_NAMES
    elif cp.protocol == UDP:
        names = (tcp.UDP_STATE_NAME,)
    elif cp.protocol == SCTP:
        names = _SCTP_STATE_NAMES
    else:
        return "NONE" if cp.protocol == 0 else "ERR!"
    return names[state] if state < len(names) else "ERR!"


def _expires(cp: Conn, now: float, hz: int) -> int:
    """jiffies_delta_to_msecs(expires - jiffies) / 1000: whole seconds left, never negative.

    The simulator's times are floats; rounding the difference to whole jiffies first keeps float
    noise (899.9999...) from costing a second.
    """
    jiffies = round(max(0.0, cp.expires - now) * hz)
    msecs = -(-jiffies * 1000 // hz)  # jiffies_to_msecs() rounds up when HZ does not divide 1000
    return msecs // 1000
