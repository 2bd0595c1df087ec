"""twos: power of two choices (ip_vs_twos.c), from the simulator's seeded random source.

The kernel draws from its CSPRNG, which cannot be seeded: the simulator reproduces the
distribution and every rule of the choice, not the kernel's individual draws.
"""

from __future__ import annotations

from lbcore._ints import i32
from lbcore.sim.schedulers._base import Packet, SchedulerImpl
from lbcore.sim.state import OVERLOAD, Dest


class PowerOfTwoChoices(SchedulerImpl):
    name = "twos"

    def schedule(self, pkt: Packet) -> Dest | None:
        eligible = [d for d in self.svc.dests if not d.flags & OVERLOAD and d.weight > 0]
        if not eligible:
            return None
        total = i32(sum(d.weight for d in eligible)) + 1  # draws are in [0, total weight]
        draw = self.host.random.randrange
        r1, r2 = draw(total), draw(total)
        choice1 = choice2 = None
        w1 = w2 = oh1 = oh2 = 0
        for dest in eligible:
            r1 -= dest.weight
            r2 -= dest.weight
            if r1 <= 0 and choice1 is None:
                choice1, w1, oh1 = dest, dest.weight, dest.overhead()
            if r2 <= 0 and choice2 is None:
                choice2, w2, oh2 = dest, dest.weight, dest.overhead()
            if choice1 is not None and choice2 is not None:
                break
        # 32-bit int products: they can wrap, and the kernel compares the wrapped values.
        if choice2 is not None and i32(w2 * oh1) > i32(w1 * oh2):
            return choice2
        return choice1

    def peek(self, pkt: Packet) -> Dest | None:
        state = self.host.random.getstate()
        try:
            return self.schedule(pkt)
        finally:
            self.host.random.setstate(state)


SCHEDULER = PowerOfTwoChoices
