"""lblc: locality-based least connection (ip_vs_lblc.c): a destination address keeps its dest."""

from __future__ import annotations

from lbcore.model import IPAddress
from lbcore.sim.schedulers._base import Host, Packet, SchedulerImpl
from lbcore.sim.schedulers._locality import Entry, LocalityTable
from lbcore.sim.schedulers.wlc import weighted_least
from lbcore.sim.state import AVAILABLE, Dest, SimService


def is_overloaded(dest: Dest, svc: SimService) -> bool:
    """lblc's own test: more active connections than weight while some dest is under half load."""
    if dest.activeconns > dest.weight:
        return any(d.activeconns * 2 < d.weight for d in svc.dests)
    return False


class LBLCEntry(Entry):
    __slots__ = ("dest",)

    def __init__(self, addr: IPAddress, now: float, dest: Dest) -> None:
        super().__init__(addr, now)
        self.dest = dest
        dest.cache_refs += 1

    def release(self) -> None:
        self.dest.cache_refs -= 1


class LocalityBasedLeastConnection(SchedulerImpl):
    name = "lblc"

    def __init__(self, svc: SimService, host: Host) -> None:
        super().__init__(svc, host)
        self.table: LocalityTable[LBLCEntry] = LocalityTable(
            host, host.profile.lblc_tab_bits, lambda: host.sysctls.lblc_expiration
        )

    def done(self) -> None:
        self.table.flush()

    def _hit(self, entry: LBLCEntry | None) -> Dest | None:
        """The cached dest, if it may take the connection."""
        if entry is None:
            return None
        dest = entry.dest
        # A cache hit ignores the OVERLOAD flag (thresholds); it uses is_overloaded() instead.
        if dest.flags & AVAILABLE and dest.weight > 0 and not is_overloaded(dest, self.svc):
            return dest
        return None

    def peek(self, pkt: Packet) -> Dest | None:
        hit = self._hit(self.table.get(pkt.daddr))
        return hit if hit is not None else weighted_least(self.svc.dests)

    def schedule(self, pkt: Packet) -> Dest | None:
        entry = self.table.get(pkt.daddr)
        if entry is not None:
            entry.lastuse = pkt.now
        hit = self._hit(entry)
        if hit is not None:
            return hit
        dest = weighted_least(self.svc.dests)
        if dest is None:
            return None
        if entry is not None:
            if entry.dest is dest:
                return dest
            self.table.unlink(entry)
        self.table.insert(LBLCEntry(pkt.daddr, pkt.now, dest))
        return dest


SCHEDULER = LocalityBasedLeastConnection
