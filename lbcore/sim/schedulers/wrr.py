"""wrr: weighted round robin (ip_vs_wrr.c), with its gcd / max-weight cursor."""

from __future__ import annotations

from math import gcd

from lbcore.sim.schedulers._base import Host, Packet, SchedulerImpl
from lbcore.sim.state import OVERLOAD, Dest, SimService


class WeightedRoundRobin(SchedulerImpl):
    name = "wrr"

    def __init__(self, svc: SimService, host: Host) -> None:
        super().__init__(svc, host)
        self.cl: Dest | None = None  # current position; None is the list head
        self.di, self.mw = self._weights()
        self.cw = self.mw

    def _weights(self) -> tuple[int, int]:
        """(di, mw): gcd of positive weights (1 if none), max weight - (di - 1)."""
        g = 0
        for dest in self.svc.dests:
            if dest.weight > 0:
                g = gcd(dest.weight, g) if g > 0 else dest.weight
        di = g or 1
        mw = max([0] + [d.weight for d in self.svc.dests]) - (di - 1)
        return di, mw

    def _changed(self, dest: Dest) -> None:
        # ip_vs_wrr_dest_changed(): back to the head; keep cw if it is still a valid step.
        self.cl = None
        self.di, self.mw = self._weights()
        if self.cw > self.mw or self.cw == 0:
            self.cw = self.mw
        elif self.di > 1:
            self.cw = (self.cw // self.di) * self.di + 1

    def add_dest(self, dest: Dest) -> None:
        self._changed(dest)

    def del_dest(self, dest: Dest, index: int) -> None:
        self._changed(dest)

    def upd_dest(self, dest: Dest) -> None:
        self._changed(dest)

    def schedule(self, pkt: Packet) -> Dest | None:
        if self.mw == 0:
            return None  # no dest has a positive weight; the cursor stays
        dests = self.svc.dests
        n = len(dests)
        last = self.cl
        stop: Dest | None = None
        last_pass = restarted = False
        start = 0 if last is None else dests.index(last) + 1
        while True:
            for i in range(start, n):
                dest = dests[i]
                if not dest.flags & OVERLOAD and dest.weight >= self.cw:
                    self.cl = dest
                    return dest
                if dest is stop:
                    self.cl = dest
                    return None
            start = 0  # the next pass runs from the head
            self.cw -= self.di
            if self.cw <= 0:
                self.cw = self.mw
                # Stop after a full pass at weight >= 1, or when the only pass began at the head.
                if last_pass or last is None:
                    self.cl = None
                    return None
                restarted = True
            last_pass = self.cw <= self.di
            if last_pass and restarted and last is not None:
                restarted = False
                stop = last


SCHEDULER = WeightedRoundRobin
