"""What every scheduler shares: the packet it sees, the host it asks, and the kernel's hooks.

Each scheduler keeps the kernel's decisions in one place: list order (newest first), tie-breaking, integer
arithmetic and hash tables. A scheduler is bound to one service (``init_service``) and told of
every change to its dest list through the kernel's hooks.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from lbcore.model import IPAddress, Sysctls
    from lbcore.sim.profile import KernelProfile
    from lbcore.sim.state import Dest, SimService


class Packet:
    """What a scheduler may look at in the packet being scheduled (struct ip_vs_iphdr + ports)."""

    __slots__ = ("daddr", "dport", "now", "protocol", "saddr", "sport")

    def __init__(
        self, protocol: int, saddr: IPAddress, sport: int, daddr: IPAddress, dport: int, now: float
    ) -> None:
        self.protocol = protocol
        self.saddr = saddr
        self.sport = sport
        self.daddr = daddr
        self.dport = dport
        self.now = now


class Host(Protocol):
    """What a scheduler may ask of the simulated kernel around it."""

    sysctls: Sysctls
    random: random.Random
    profile: KernelProfile

    def now(self) -> float:
        """The virtual time."""
        ...

    def call_at(self, when: float, callback: Callable[[float], None]) -> None:
        """Run ``callback(now)`` when the virtual clock reaches ``when``."""
        ...


class SchedulerImpl:
    """Base of every scheduler: the kernel's hooks, which do nothing unless overridden."""

    name: ClassVar[str]

    def __init__(self, svc: SimService, host: Host) -> None:
        """init_service: bind to ``svc``, whose dest list may already hold dests."""
        self.svc = svc
        self.host = host

    def add_dest(self, dest: Dest) -> None:
        """add_dest: ``dest`` was just inserted at the head of the list."""

    def del_dest(self, dest: Dest, index: int) -> None:
        """del_dest: ``dest`` was just unlinked from position ``index`` of the list."""

    def upd_dest(self, dest: Dest) -> None:
        """upd_dest: ``dest`` was edited (called on every edit, even one that changed nothing)."""

    def done(self) -> None:
        """done_service: the service is deleted or gets another scheduler."""

    def schedule(self, pkt: Packet) -> Dest | None:
        """Pick the dest for a new connection, or None."""
        raise NotImplementedError

    def peek(self, pkt: Packet) -> Dest | None:
        """What :meth:`schedule` would pick, changing nothing.

        By default the scheduler's own attributes are put back afterwards, which suffices for a
        scheduler whose state is only its attributes (rr's cursor, wrr's weights); others override.
        """
        saved = dict(vars(self))
        try:
            return self.schedule(pkt)
        finally:
            vars(self).clear()
            vars(self).update(saved)
