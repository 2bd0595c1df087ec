"""The simulator's kernel objects: a real server (``struct ip_vs_dest``), a service and counters.

These are mutable on purpose: they are the data plane, changed by every packet. The immutable
model (:mod:`lbcore.model`) says what was configured; these say what the kernel holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lbcore._ints import i32
from lbcore.model import IPAddress, RealServer, VirtualService

if TYPE_CHECKING:
    from lbcore.sim.schedulers import SchedulerImpl

# IP_VS_DEST_F_* (include/uapi/linux/ip_vs.h)
AVAILABLE = 0x1
OVERLOAD = 0x2

# IP_VS_SVC_F_* service flags
SVC_PERSISTENT = 0x1
SVC_ONEPACKET = 0x4


class Stats:
    """One set of IPVS counters (struct ip_vs_stats) and what the estimator last showed.

    The kernel counts per packet, but user-visible counters and rates are a snapshot the estimator
    takes every 2 s (ip_vs_est.c); ``shown`` and the ``*_rate`` fields are that snapshot.
    """

    __slots__ = ("_last", "avg", "live", "shown", "zero")

    # conns, inpkts, outpkts, inbytes, outbytes
    def __init__(self) -> None:
        self.live = [0, 0, 0, 0, 0]
        self.shown = [0, 0, 0, 0, 0]
        self.zero = [0, 0, 0, 0, 0]
        self.avg = [0, 0, 0, 0, 0]  # EWMA, scaled: rates of conns/pkts by 2^10, bytes by 2^5
        self._last = [0, 0, 0, 0, 0]

    def estimate(self) -> None:
        """One estimator tick (every 2 s): snapshot the counters and update the rate EWMAs."""
        live = self.live
        for i in range(5):
            delta = live[i] - self._last[i]
            self._last[i] = live[i]
            if i < 3:  # cps, inpps, outpps: avg += ((delta << 9) - avg) >> 2
                self.avg[i] += ((delta << 9) - self.avg[i]) >> 2
            else:  # inbps, outbps: avg += ((delta << 4) - avg) >> 2
                self.avg[i] += ((delta << 4) - self.avg[i]) >> 2
        self.shown = list(live)

    def estimate_ticks(self, ticks: int) -> None:
        """``ticks`` estimator ticks with no traffic between them, as ``ticks`` calls of :meth:`estimate`.

        With the counters still, a tick maps the state (avg, last, shown) by a fixed function: once
        a tick changes nothing, no later one can. The EWMA reaches its fixed point within about
        2.5 ticks per bit of ``avg`` (``avg -= avg >> 2`` stops at 3 or below, a negative one at 0),
        so at most a few hundred ticks run, whatever ``ticks`` is.
        """
        for _ in range(ticks):
            before = (list(self.avg), list(self._last), list(self.shown))
            self.estimate()
            if (self.avg, self._last, self.shown) == before:
                return

    def counters(self) -> list[int]:
        """conns, inpkts, outpkts, inbytes, outbytes as ipvsadm --stats shows them."""
        return [s - z for s, z in zip(self.shown, self.zero)]

    def rates(self) -> list[int]:
        """cps, inpps, outpps, inbps, outbps as ipvsadm --rate shows them."""
        a = self.avg
        return [(a[0] + 0x1FF) >> 10, (a[1] + 0x1FF) >> 10, (a[2] + 0x1FF) >> 10,
                (a[3] + 0xF) >> 5, (a[4] + 0xF) >> 5]

    def reset(self) -> None:
        """Zero (ipvsadm -Z): the last snapshot becomes the zero point; rates restart."""
        self.zero = list(self.shown)
        self.avg = [0, 0, 0, 0, 0]


class Dest:
    """A real server as the kernel holds it: settings, flags, counters and statistics."""

    __slots__ = (
        "__weakref__",
        "activeconns",
        "address",
        "cache_refs",
        "family",
        "flags",
        "forward",
        "idle_start",
        "inactconns",
        "l_threshold",
        "last_weight",
        "no_output",
        "persistconns",
        "port",
        "service",
        "stats",
        "tunnel",
        "u_threshold",
        "weight",
    )

    def __init__(self, rs: RealServer, service: SimService) -> None:
        self.address = rs.address
        self.port = rs.port
        self.family = rs.address.version
        self.flags = 0
        self.activeconns = 0
        self.inactconns = 0
        self.persistconns = 0
        self.stats = Stats()
        self.service = service
        self.cache_refs = 0  # lblc/lblcr cache entries pointing here (they hold a reference)
        self.idle_start = 0.0
        self.last_weight = 0
        self.weight = 0
        self.u_threshold = 0
        self.l_threshold = 0
        self.forward = rs.forward
        self.tunnel = rs.tunnel
        self.no_output = True

    def update(self, rs: RealServer, add: bool) -> None:
        """__ip_vs_update_dest(): store the settings in the kernel's order (ip_vs_ctl.c)."""
        if add or rs.weight != 0:
            self.last_weight = rs.weight  # only mh reads it
        self.weight = rs.weight
        self.forward = rs.forward
        self.tunnel = rs.tunnel
        # Non-NAT connections never see replies: IP_VS_CONN_F_NOOUTPUT.
        self.no_output = rs.forward.kernel_code != 0
        self.flags |= AVAILABLE
        # Raising or removing the upper threshold clears OVERLOAD; lowering it never sets it.
        if rs.u_threshold == 0 or rs.u_threshold > self.u_threshold:
            self.flags &= ~OVERLOAD
        self.u_threshold = rs.u_threshold
        self.l_threshold = rs.l_threshold

    @property
    def key(self) -> tuple[IPAddress, int]:
        return (self.address, self.port)

    @property
    def available(self) -> bool:
        return bool(self.flags & AVAILABLE)

    @property
    def overloaded(self) -> bool:
        return bool(self.flags & OVERLOAD)

    def overhead(self) -> int:
        """ip_vs_dest_conn_overhead(): (activeconns << 8) + inactconns, a C int."""
        return i32((self.activeconns << 8) + self.inactconns)

    def bind(self, template: bool) -> None:
        """ip_vs_bind_dest(): count a new connection (always inactive at first) or template."""
        if template:
            self.persistconns += 1
        else:
            self.inactconns += 1
        if self.u_threshold and self.activeconns + self.inactconns >= self.u_threshold:
            self.flags |= OVERLOAD

    def unbind(self, template: bool, inactive: bool) -> None:
        """ip_vs_unbind_dest(): uncount an expired entry, then maybe clear OVERLOAD."""
        if template:
            self.persistconns -= 1
        elif inactive:
            self.inactconns -= 1
        else:
            self.activeconns -= 1
        total = self.activeconns + self.inactconns
        if self.l_threshold:
            if total < self.l_threshold:
                self.flags &= ~OVERLOAD
        elif self.u_threshold:
            if (total * 4) & 0xFFFFFFFF < (self.u_threshold * 3) & 0xFFFFFFFF:
                self.flags &= ~OVERLOAD
        else:
            self.flags &= ~OVERLOAD

    def refs(self) -> int:
        """References besides the trash list: bound connections and templates, cache entries."""
        return self.activeconns + self.inactconns + self.persistconns + self.cache_refs

    def __repr__(self) -> str:
        return f"<Dest {self.address}:{self.port} w={self.weight}>"


class SimService:
    """A virtual service as the kernel holds it: its dest list (newest first) and scheduler."""

    __slots__ = (
        "__weakref__",
        "config",
        "dests",
        "family",
        "flags",
        "fwmark",
        "netmask",
        "persistent",
        "port",
        "scheduler",
        "stats",
        "timeout",
    )

    def __init__(self, config: VirtualService) -> None:
        self.dests: list[Dest] = []
        self.stats = Stats()
        self.scheduler: SchedulerImpl | None = None
        self.config = config
        self.port = config.port
        self.fwmark = config.fwmark or 0
        self.family = config.family
        self.flags = 0
        self.persistent = False
        self.timeout = 0
        self.netmask = 0  # an IPv4 mask as an int, or an IPv6 prefix length
        self.configure(config)

    def configure(self, config: VirtualService) -> None:
        """Store the settings that ip_vs_edit_service() replaces (flags, timeout, netmask)."""
        self.config = config
        flags = sum(f.bit for f in config.flags)
        if config.one_packet:
            flags |= SVC_ONEPACKET
        p = config.persistence
        self.persistent = p is not None
        if p is not None:
            flags |= SVC_PERSISTENT
            self.timeout = p.timeout
            prefix = p.prefix(config.family)
            self.netmask = int(prefix)  # an IPv4Address mask, or already a prefix length
        else:
            self.timeout = 0
            self.netmask = 0xFFFFFFFF if config.family == 4 else 128
        self.flags = flags

    def find(self, address: IPAddress, port: int) -> Dest | None:
        for dest in self.dests:
            if dest.port == port and dest.address == address:
                return dest
        return None
