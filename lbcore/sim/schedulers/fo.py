"""fo: weighted failover (ip_vs_fo.c): the highest weight wins; ties go to the first in list."""

from __future__ import annotations

from lbcore.sim.schedulers._base import Packet, SchedulerImpl
from lbcore.sim.state import OVERLOAD, Dest


class WeightedFailover(SchedulerImpl):
    name = "fo"

    def schedule(self, pkt: Packet) -> Dest | None:
        best: Dest | None = None
        hw = 0  # weight 0 never wins
        for dest in self.svc.dests:
            if not dest.flags & OVERLOAD and dest.weight > hw:
                best, hw = dest, dest.weight
        return best


SCHEDULER = WeightedFailover
