"""The cache of lblc and lblcr: destination address -> entry, 1024 buckets, a periodic GC.

Both modules (ip_vs_lblc.c, ip_vs_lblcr.c) keep the same table with the same timer; only the
entry (one dest, or a set of dests) differs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from lbcore.model import IPAddress
from lbcore.sim.schedulers._base import Host
from lbcore.sim.schedulers._hash import fold, hash_32

CHECK_EXPIRE_INTERVAL = 60.0
COUNT_FOR_FULL_EXPIRATION = 30
ENTRY_TIMEOUT = 6 * 60.0


class Entry:
    """A cache entry: the destination address it is for and when it was last used."""

    __slots__ = ("addr", "lastuse")

    def __init__(self, addr: IPAddress, now: float) -> None:
        self.addr = addr
        self.lastuse = now

    def release(self) -> None:
        """Drop the references the entry holds on dests."""
        raise NotImplementedError


E = TypeVar("E", bound=Entry)


class LocalityTable(Generic[E]):
    """ip_vs_lblc_table / ip_vs_lblcr_table."""

    def __init__(self, host: Host, bits: int, expiration: Callable[[], int]) -> None:
        self.host = host
        self.bits = bits  # IP_VS_LBLC_TAB_BITS
        self.max_size = (1 << bits) * 16  # more entries than this starts the idle collection
        self.expiration = expiration  # the sysctl lblc_expiration or lblcr_expiration
        self.buckets: list[list[E]] = [[] for _ in range(1 << bits)]
        self.index: dict[IPAddress, E] = {}
        # The kernel counts an entry when it is hashed and uncounts it only in the GC, so an
        # entry replaced by lblc (delete + new) is counted twice until the next collection.
        self.entries = 0
        self.rover = 0
        self.counter = 1
        self.dead = False
        host.call_at(host.now() + CHECK_EXPIRE_INTERVAL, self._check_expire)

    def get(self, addr: IPAddress) -> E | None:
        return self.index.get(addr)

    def insert(self, entry: E) -> None:
        """Hash a new entry at the head of its bucket."""
        self.buckets[hash_32(fold(entry.addr), self.bits)].insert(0, entry)
        self.index[entry.addr] = entry
        self.entries += 1

    def unlink(self, entry: E) -> None:
        """Remove an entry without uncounting it (ip_vs_lblc_del)."""
        self.buckets[hash_32(fold(entry.addr), self.bits)].remove(entry)
        del self.index[entry.addr]
        entry.release()

    def flush(self) -> None:
        """done_service: release every entry and stop the timer."""
        self.dead = True
        for entry in list(self.index.values()):
            self.unlink(entry)
        self.entries = 0

    def _sweep(self, now: float, idle: float, goal: int | None) -> None:
        j = self.rover
        size = len(self.buckets)
        for _ in range(size):
            j = (j + 1) & (size - 1)
            for entry in list(self.buckets[j]):
                if now < entry.lastuse + idle:
                    continue
                self.unlink(entry)
                self.entries -= 1
                if goal is not None:
                    goal -= 1
            if goal is not None and goal <= 0:
                break
        self.rover = j

    def _check_expire(self, now: float) -> None:
        # ip_vs_lblc_check_expire(): every 60 s; a full sweep every 30th time.
        if self.dead:
            return
        if self.counter % COUNT_FOR_FULL_EXPIRATION == 0:
            self._sweep(now, float(self.expiration()), None)
            self.counter = 1
        elif self.entries <= self.max_size:
            self.counter += 1
        else:
            goal = min((self.entries - self.max_size) * 4 // 3, self.max_size // 2)
            self._sweep(now, ENTRY_TIMEOUT, goal)
        self.host.call_at(now + CHECK_EXPIRE_INTERVAL, self._check_expire)
