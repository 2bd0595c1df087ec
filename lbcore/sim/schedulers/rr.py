"""rr: round robin (ip_vs_rr.c)."""

from __future__ import annotations

from lbcore.sim.schedulers._base import Packet, SchedulerImpl
from lbcore.sim.state import OVERLOAD, Dest


class RoundRobin(SchedulerImpl):
    name = "rr"

    # The cursor: the last dest picked, or None for the list head (before the first dest).
    pos: Dest | None = None

    def del_dest(self, dest: Dest, index: int) -> None:
        # ip_vs_rr_del_dest(): a cursor on the removed dest moves to its predecessor (or head).
        if self.pos is dest:
            self.pos = self.svc.dests[index - 1] if index > 0 else None

    def schedule(self, pkt: Packet) -> Dest | None:
        dests = self.svc.dests
        if self.pos is None:
            order = range(len(dests))  # from the head: one pass
        else:
            # After the cursor to the end, then from the front up to the cursor itself.
            start = dests.index(self.pos) + 1
            n = len(dests)
            order = range(start, start + n)
        n = len(dests)
        for i in order:
            dest = dests[i % n]
            if not dest.flags & OVERLOAD and dest.weight > 0:
                self.pos = dest
                return dest
        return None


SCHEDULER = RoundRobin
