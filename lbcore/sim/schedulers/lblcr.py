"""lblcr: lblc with replication (ip_vs_lblcr.c): a destination address keeps a set of dests."""

from __future__ import annotations

from lbcore.model import IPAddress
from lbcore.sim.schedulers._base import Host, Packet, SchedulerImpl
from lbcore.sim.schedulers._locality import Entry, LocalityTable
from lbcore.sim.schedulers.lblc import is_overloaded
from lbcore.sim.schedulers.wlc import weighted_least
from lbcore.sim.state import AVAILABLE, OVERLOAD, Dest, SimService


class LBLCREntry(Entry):
    """An entry with its dest set: newest member first, and when the set last changed."""

    __slots__ = ("lastmod", "members")

    def __init__(self, addr: IPAddress, now: float) -> None:
        super().__init__(addr, now)
        self.members: list[Dest] = []
        self.lastmod = now

    def insert(self, dest: Dest, now: float) -> None:
        """ip_vs_dest_set_insert() without the membership check."""
        self.members.insert(0, dest)
        dest.cache_refs += 1
        self.lastmod = now

    def erase(self, dest: Dest, now: float) -> None:
        self.members.remove(dest)
        dest.cache_refs -= 1
        self.lastmod = now

    def release(self) -> None:
        for dest in self.members:
            dest.cache_refs -= 1
        self.members = []

    def set_min(self) -> Dest | None:
        """ip_vs_dest_set_min(): weighted least connection over the available members."""
        least: Dest | None = None
        loh = 0
        for dest in self.members:
            if dest.flags & OVERLOAD:
                continue
            if least is None:
                if dest.weight > 0 and dest.flags & AVAILABLE:
                    least, loh = dest, dest.overhead()
                continue
            doh = dest.overhead()
            if loh * dest.weight > doh * least.weight and dest.flags & AVAILABLE:
                least, loh = dest, doh
        return least

    def set_max(self) -> Dest | None:
        """ip_vs_dest_set_max(): the most loaded member of positive weight."""
        most: Dest | None = None
        moh = 0
        for dest in self.members:
            if most is None:
                if dest.weight > 0:
                    most, moh = dest, dest.overhead()
                continue
            doh = dest.overhead()
            if moh * dest.weight < doh * most.weight and dest.weight > 0:
                most, moh = dest, doh
        return most


class LocalityBasedLeastConnectionReplicated(SchedulerImpl):
    name = "lblcr"

    def __init__(self, svc: SimService, host: Host) -> None:
        super().__init__(svc, host)
        self.table: LocalityTable[LBLCREntry] = LocalityTable(
            host, host.profile.lblcr_tab_bits, lambda: host.sysctls.lblcr_expiration
        )

    def done(self) -> None:
        self.table.flush()

    def _hit(self, entry: LBLCREntry) -> Dest | None:
        """The least loaded member of the set, if it may take the connection."""
        dest = entry.set_min()
        return dest if dest is not None and not is_overloaded(dest, self.svc) else None

    def peek(self, pkt: Packet) -> Dest | None:
        entry = self.table.get(pkt.daddr)
        hit = self._hit(entry) if entry is not None else None
        return hit if hit is not None else weighted_least(self.svc.dests)

    def schedule(self, pkt: Packet) -> Dest | None:
        now = pkt.now
        entry = self.table.get(pkt.daddr)
        if entry is None:
            dest = weighted_least(self.svc.dests)
            if dest is None:
                return None
            entry = LBLCREntry(pkt.daddr, now)
            self.table.insert(entry)
            entry.insert(dest, now)
            return dest
        entry.lastuse = now
        hit = self._hit(entry)  # chosen before the shrink, which may erase it from the set
        # Shrink a set that has not changed for lblcr_expiration seconds (default 24 h).
        if len(entry.members) > 1 and now > entry.lastmod + self.host.sysctls.lblcr_expiration:
            most = entry.set_max()
            if most is not None:
                entry.erase(most, now)
        if hit is not None:
            return hit
        dest = weighted_least(self.svc.dests)
        if dest is None:
            return None
        if dest not in entry.members:
            entry.insert(dest, now)
        return dest


SCHEDULER = LocalityBasedLeastConnectionReplicated
