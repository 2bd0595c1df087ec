"""sed: shortest expected delay (ip_vs_sed.c): wlc with overhead activeconns + 1."""

from __future__ import annotations

from lbcore.sim.schedulers._base import Packet, SchedulerImpl
from lbcore.sim.schedulers.wlc import weighted_least
from lbcore.sim.state import Dest


def expected_delay(dest: Dest) -> int:
    """ip_vs_sed_dest_overhead(): activeconns + 1; inactive connections do not count."""
    return dest.activeconns + 1


class ShortestExpectedDelay(SchedulerImpl):
    name = "sed"

    def schedule(self, pkt: Packet) -> Dest | None:
        return weighted_least(self.svc.dests, expected_delay)


SCHEDULER = ShortestExpectedDelay
