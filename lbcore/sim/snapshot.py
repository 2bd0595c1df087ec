"""The simulated kernel as a :class:`~lbcore.formats.listing.Snapshot`, for ipvsadm's listings.

A snapshot is what ipvsadm would read from this kernel now: every service with its real servers,
counters and connection counts, and every connection and template with its state's name and the
whole seconds it has left. The timers that are due fire first, as the kernel's would have by the
time it is read.

What differs from a kernel, on purpose: the kernel lists connections in the order of its hash
table, whose seed is random (ipvs-notes §4.1); the snapshot lists them sorted, by protocol number,
then source, then virtual, then destination, each by family (IPv4 first), address and port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import attrs

from lbcore.formats.listing import ConnectionEntry, RealServerStats, ServiceStats, Snapshot, Stats
from lbcore.model import IPAddress, RealServer
from lbcore.sim.director import F_TEMPLATE, SCTP, TCP, UDP, Conn, Director
from lbcore.sim.state import Dest, SimService
from lbcore.sim.state import Stats as SimStats
from lbcore.sim.tcp import STATE_NAMES as TCP_STATE_NAMES
from lbcore.sim.tcp import UDP_STATE_NAME

# sctp_state_name_table[] (ip_vs_proto_sctp.c), indexed by IP_VS_SCTP_S_*.
_SCTP_STATE_NAMES = ("NONE", "INIT1", "INIT", "C-SENT", "C-REPLIED", "C-WAIT", "COOKIE",
                     "C-ECHOED", "ESTABLISHED", "S-SENT", "S-RECEIVED", "S-ACK-SENT", "REJECTED",
                     "CLOSED")
# ip_vs_ctpl_state_name_table[]: a template is NONE until a reply (or ESTABLISHED) assures it.
_TEMPLATE_STATE_NAMES = ("NONE", "ASSURED")


def snapshot(director: Director, *, services: bool = True, connections: bool = True) -> Snapshot:
    """What ipvsadm's listings show of ``director`` now.

    Args:
        director: the simulated kernel.
        services: read the services (``-Ln``); without, ``services`` is empty.
        connections: read the connection table (``-Lnc``); without, ``connections`` is empty.

    Raises:
        Nothing: every state the simulator holds can be listed.
    """
    now = director.now()
    director.run_timers(now)
    return Snapshot(
        services=[_service(svc) for svc in director.services.values()] if services else (),
        connections=([_entry(cp, now, director.profile.hz) for cp in _sorted_entries(director.entries())]
                     if connections else ()),
        timeouts=director.get_timeouts(),
        conn_tab_size=director.profile.conn_tab_size,
    )


def _stats(stats: SimStats) -> Stats:
    return Stats(*stats.counters(), *stats.rates())


def _service(svc: SimService) -> ServiceStats:
    # The configured service, without the real servers it was added with: the dests say which
    # the kernel holds now (in its order, newest first).
    return ServiceStats(attrs.evolve(svc.config, real_servers=()), [_real_server(d) for d in svc.dests],
                        _stats(svc.stats))


def _real_server(dest: Dest) -> RealServerStats:
    rs = RealServer(dest.address, dest.port, weight=dest.weight, forward=dest.forward,
                    u_threshold=dest.u_threshold, l_threshold=dest.l_threshold, tunnel=dest.tunnel)
    return RealServerStats(rs, dest.activeconns, dest.inactconns, dest.persistconns, _stats(dest.stats))


def _sorted_entries(entries: Iterable[Conn]) -> list[Conn]:
    def key(cp: Conn) -> tuple[int, ...]:
        caddr, vaddr, daddr = cp.caddr, _vaddr(cp), cp.daddr
        return (cp.protocol, caddr.version, int(caddr), cp.cport, vaddr.version, int(vaddr), cp.vport,
                daddr.version, int(daddr), cp.dport, cp.flags & F_TEMPLATE, cp.state)

    return sorted(entries, key=key)


def _entry(cp: Conn, now: float, hz: int) -> ConnectionEntry:
    return ConnectionEntry(cp.protocol, cp.caddr, cp.cport, _vaddr(cp), cp.vport, cp.daddr, cp.dport,
                           _state_name(cp), _expires(cp, now, hz))


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


def _state_name(cp: Conn) -> str:
    """ip_vs_state_name(): the template's or the protocol's name for the state."""
    state = cp.state
    if cp.flags & F_TEMPLATE:
        return _TEMPLATE_STATE_NAMES[state] if state < len(_TEMPLATE_STATE_NAMES) else "ERR!"
    names: tuple[str, ...]
    if cp.protocol == TCP:
        names = TCP_STATE_NAMES
    elif cp.protocol == UDP:
        names = (UDP_STATE_NAME,)
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
