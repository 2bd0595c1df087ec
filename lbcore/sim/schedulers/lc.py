"""lc: least connection (ip_vs_lc.c)."""

from __future__ import annotations

from lbcore.sim.schedulers._base import Packet, SchedulerImpl
from lbcore.sim.state import OVERLOAD, Dest


class LeastConnection(SchedulerImpl):
    name = "lc"

    def schedule(self, pkt: Packet) -> Dest | None:
        least: Dest | None = None
        loh = 0
        for dest in self.svc.dests:
            if dest.flags & OVERLOAD or dest.weight == 0:
                continue
            # The overheads are compared as unsigned ints; strict '<': ties keep the earlier dest.
            doh = dest.overhead() & 0xFFFFFFFF
            if least is None or doh < loh:
                least, loh = dest, doh
        return least


SCHEDULER = LeastConnection
