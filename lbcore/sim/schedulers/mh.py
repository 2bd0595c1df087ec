"""mh: Maglev hashing (ip_vs_mh.c), a 4093-slot table keyed with fixed SipHash keys."""

from __future__ import annotations

from math import gcd

from lbcore.model import IPAddress
from lbcore.sim.schedulers._base import Host, Packet, SchedulerImpl
from lbcore.sim.schedulers._hash import fold, hsiphash_u32
from lbcore.sim.schedulers.sh import SCHED_FALLBACK, hash_port, unavailable
from lbcore.sim.state import Dest, SimService

# Fixed, not random: ip_vs_mh_init_svc() sets these keys.
HASH1 = (2654435761, 2654435761)
HASH2 = (2654446892, 2654446892)


def fold_as(address: IPAddress, family: int) -> int:
    """fold() of ``address`` read as the service's family (mixed-family tunnel dests)."""
    if address.version == family or family == 6:
        return fold(address)
    return int(address) >> 96  # an IPv6 dest under an IPv4 service: its first word


def hashkey(value: int, port: int, key: tuple[int, int], offset: int = 0) -> int:
    """ip_vs_mh_hashkey(): hsiphash of the u32 offset + port + fold(addr)."""
    return hsiphash_u32(offset + port + value, *key)


class MaglevHashing(SchedulerImpl):
    name = "mh"

    def __init__(self, svc: SimService, host: Host) -> None:
        super().__init__(svc, host)
        self.size = host.profile.mh_tab_size  # a prime: 4093 for CONFIG_IP_VS_MH_TAB_INDEX=12
        self.tab_bits = host.profile.mh_tab_index // 2
        self.lookup: list[Dest | None] = [None] * self.size
        self._reassign()

    def _reassign(self) -> None:
        dests = self.svc.dests
        if len(dests) > self.size:
            return  # the kernel returns -EINVAL, which the hooks ignore: the table goes stale
        # gcd and rshift use last_weight, so a dest edited to weight 0 keeps its slots.
        g = 0
        for dest in dests:
            if dest.last_weight > 0:
                g = gcd(dest.last_weight, g) if g > 0 else dest.last_weight
        if g < 1:
            self.lookup = [None] * self.size
            return
        mw = max(d.last_weight for d in dests) // g
        rshift = max(0, mw.bit_length() - self.tab_bits)
        family = self.svc.family
        perm: list[int] = []
        skip: list[int] = []
        turns: list[int] = []
        for dest in dests:
            value = fold_as(dest.address, family)
            perm.append(hashkey(value, dest.port, HASH1) % self.size)
            skip.append(hashkey(value, dest.port, HASH2) % (self.size - 1) + 1)
            turns.append(((dest.last_weight // g) >> rshift) or (1 if dest.last_weight else 0))
        lookup: list[Dest | None] = [None] * self.size
        filled = bytearray(self.size)
        n = dt_count = 0
        while True:
            i = 0
            while i < len(dests):
                if turns[i] < 1:  # added with weight 0 and never given another
                    i += 1
                    continue
                c = perm[i]
                while filled[c]:
                    c = (c + skip[i]) % self.size
                perm[i] = c
                filled[c] = 1
                lookup[c] = dests[i]
                n += 1
                if n == self.size:
                    self.lookup = lookup
                    return
                dt_count += 1
                if dt_count >= turns[i]:
                    dt_count = 0
                    i += 1

    def add_dest(self, dest: Dest) -> None:
        self._reassign()

    def del_dest(self, dest: Dest, index: int) -> None:
        self._reassign()

    def upd_dest(self, dest: Dest) -> None:
        self._reassign()

    def schedule(self, pkt: Packet) -> Dest | None:
        value = fold_as(pkt.saddr, self.svc.family)
        port = hash_port(self.svc.flags, pkt)
        h = hashkey(value, port, HASH1) % self.size
        dest = self.lookup[h]
        if dest is None:
            return None
        if not unavailable(dest):
            return dest
        if not self.svc.flags & SCHED_FALLBACK:
            return None
        # ip_vs_mh_get_fallback(): every probe hashes again with an offset.
        for offset in range(self.size):
            dest = self.lookup[hashkey(value, port, HASH1, (offset + h) % self.size) % self.size]
            if dest is None:
                return None
            if not unavailable(dest):
                return dest
        return None


SCHEDULER = MaglevHashing
