"""dh: destination hashing (ip_vs_dh.c), 256 buckets filled round robin, weights ignored."""

from __future__ import annotations

from lbcore.sim.schedulers._base import Host, Packet, SchedulerImpl
from lbcore.sim.schedulers._hash import fold, hash_32
from lbcore.sim.state import AVAILABLE, OVERLOAD, Dest, SimService


class DestinationHashing(SchedulerImpl):
    name = "dh"

    def __init__(self, svc: SimService, host: Host) -> None:
        super().__init__(svc, host)
        self.bits = host.profile.dh_tab_bits  # CONFIG_IP_VS_DH_TAB_BITS
        self.buckets: list[Dest | None] = []
        self._reassign()

    def _reassign(self) -> None:
        # ip_vs_dh_reassign(): bucket i gets the (i mod n)-th dest in list order.
        dests = self.svc.dests
        n = len(dests)
        self.buckets = [dests[i % n] if n else None for i in range(1 << self.bits)]

    def add_dest(self, dest: Dest) -> None:
        self._reassign()

    def del_dest(self, dest: Dest, index: int) -> None:
        self._reassign()

    # No upd_dest: an edit does not rebuild dh's table.

    def schedule(self, pkt: Packet) -> Dest | None:
        dest = self.buckets[hash_32(fold(pkt.daddr), self.bits)]
        if dest is None or not dest.flags & AVAILABLE or dest.weight <= 0 or dest.flags & OVERLOAD:
            return None
        return dest


SCHEDULER = DestinationHashing
