"""ovf: weighted overflow (ip_vs_ovf.c): the highest weight until its active count exceeds it."""

from __future__ import annotations

from lbcore.sim.schedulers._base import Packet, SchedulerImpl
from lbcore.sim.state import OVERLOAD, Dest


class WeightedOverflow(SchedulerImpl):
    name = "ovf"

    def schedule(self, pkt: Packet) -> Dest | None:
        best: Dest | None = None
        hw = 0
        for dest in self.svc.dests:
            w = dest.weight
            # activeconns == weight is still eligible: a dest takes weight + 1 before overflowing.
            if dest.flags & OVERLOAD or dest.activeconns > w or w == 0:
                continue
            if best is None or w > hw:
                best, hw = dest, w
        return best


SCHEDULER = WeightedOverflow
