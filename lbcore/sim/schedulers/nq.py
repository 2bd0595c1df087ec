"""nq: never queue (ip_vs_nq.c): an idle dest at once, else shortest expected delay."""

from __future__ import annotations

from lbcore.sim.schedulers._base import Packet, SchedulerImpl
from lbcore.sim.state import OVERLOAD, Dest


class NeverQueue(SchedulerImpl):
    name = "nq"

    def schedule(self, pkt: Packet) -> Dest | None:
        least: Dest | None = None
        loh = 0
        for dest in self.svc.dests:
            if dest.flags & OVERLOAD or dest.weight == 0:
                continue
            doh = dest.activeconns + 1
            if dest.activeconns == 0:
                return dest  # the first idle dest in list order
            if least is None or loh * dest.weight > doh * least.weight:
                least, loh = dest, doh
        return least


SCHEDULER = NeverQueue
