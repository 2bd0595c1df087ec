"""sh: source hashing (ip_vs_sh.c), 256 buckets, a dest of weight w takes w in a row."""

from __future__ import annotations

from lbcore.sim.schedulers._base import Host, Packet, SchedulerImpl
from lbcore.sim.schedulers._hash import fold, hash_32
from lbcore.sim.state import OVERLOAD, Dest, SimService

SCHED_FALLBACK = 0x08  # IP_VS_SVC_F_SCHED_SH_FALLBACK (SCHED1)
SCHED_PORT = 0x10  # IP_VS_SVC_F_SCHED_SH_PORT (SCHED2)
PORT_PROTOCOLS = (6, 17, 132)  # tcp, udp, sctp carry a port


def unavailable(dest: Dest) -> bool:
    """is_unavailable(): weight <= 0 or overloaded (the AVAILABLE flag is not consulted)."""
    return dest.weight <= 0 or bool(dest.flags & OVERLOAD)


def hash_port(svc_flags: int, pkt: Packet) -> int:
    """The source port when the service's port flag is set and the protocol has ports, else 0."""
    return pkt.sport if svc_flags & SCHED_PORT and pkt.protocol in PORT_PROTOCOLS else 0


class SourceHashing(SchedulerImpl):
    name = "sh"

    def __init__(self, svc: SimService, host: Host) -> None:
        super().__init__(svc, host)
        self.bits = host.profile.sh_tab_bits  # CONFIG_IP_VS_SH_TAB_BITS
        self.size = 1 << self.bits
        self.buckets: list[Dest | None] = []
        self._reassign()

    def _reassign(self) -> None:
        # ip_vs_sh_reassign(): walk the list cyclically; a dest stays for max(weight, 1) buckets.
        dests = self.svc.dests
        if not dests:
            self.buckets = [None] * self.size
            return
        buckets: list[Dest | None] = []
        i = count = 0
        for _ in range(self.size):
            dest = dests[i]
            buckets.append(dest)
            count += 1
            if count >= dest.weight:
                i = (i + 1) % len(dests)
                count = 0
        self.buckets = buckets

    def add_dest(self, dest: Dest) -> None:
        self._reassign()

    def del_dest(self, dest: Dest, index: int) -> None:
        self._reassign()

    def upd_dest(self, dest: Dest) -> None:
        self._reassign()

    def hashkey(self, value: int, port: int, offset: int) -> int:
        """ip_vs_sh_hashkey(): (offset + hash_32(port + fold(addr), bits)) & (size - 1)."""
        return (offset + hash_32((port + value) & 0xFFFFFFFF, self.bits)) & (self.size - 1)

    def schedule(self, pkt: Packet) -> Dest | None:
        value = fold(pkt.saddr)
        port = hash_port(self.svc.flags, pkt)
        h = self.hashkey(value, port, 0)
        dest = self.buckets[h]
        if dest is None:
            return None
        if not unavailable(dest):
            return dest
        if not self.svc.flags & SCHED_FALLBACK:
            return None
        # ip_vs_sh_get_fallback(): the probe adds h twice, so it starts at bucket 2h.
        for offset in range(self.size):
            dest = self.buckets[self.hashkey(value, port, (offset + h) % self.size)]
            if dest is None:
                return None
            if not unavailable(dest):
                return dest
        return None


SCHEDULER = SourceHashing
