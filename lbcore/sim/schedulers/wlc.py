"""wlc: weighted least connection (ip_vs_wlc.c); its pick is shared by sed, lblc and lblcr."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from lbcore.sim.schedulers._base import Packet, SchedulerImpl
from lbcore.sim.state import OVERLOAD, Dest


def weighted_least(
    dests: Iterable[Dest], overhead: Callable[[Dest], int] = Dest.overhead
) -> Dest | None:
    """The first non-overloaded dest of positive weight, then any later one with less load per weight.

    ``loh * w(d) > doh * w(least)`` in 64-bit arithmetic, strict: ties keep the earlier dest.
    Later dests of weight 0 are not skipped, but can never win.
    """
    least: Dest | None = None
    loh = 0
    for dest in dests:
        if dest.flags & OVERLOAD:
            continue
        if least is None:
            if dest.weight > 0:
                least, loh = dest, overhead(dest)
            continue
        doh = overhead(dest)
        if loh * dest.weight > doh * least.weight:
            least, loh = dest, doh
    return least


class WeightedLeastConnection(SchedulerImpl):
    name = "wlc"

    def schedule(self, pkt: Packet) -> Dest | None:
        return weighted_least(self.svc.dests)


SCHEDULER = WeightedLeastConnection
