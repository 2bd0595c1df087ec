"""The IPVS schedulers, one module per net/netfilter/ipvs/ip_vs_<name>.c.

Each keeps the kernel's decisions in one place: list order (newest first), tie-breaking, integer
arithmetic and hash tables. A scheduler is bound to one service (``init_service``) and told of
every change to its dest list through the kernel's hooks (:mod:`lbcore.sim.schedulers._base`).
"""

from __future__ import annotations

from lbcore.enums import Scheduler
from lbcore.sim.schedulers import dh, fo, lblc, lblcr, lc, mh, nq, ovf, rr, sed, sh, twos, wlc, wrr
from lbcore.sim.schedulers._base import Host, Packet, SchedulerImpl

__all__ = ["Host", "Packet", "SchedulerImpl", "scheduler_class"]

_CLASSES: dict[str, type[SchedulerImpl]] = {
    m.SCHEDULER.name: m.SCHEDULER for m in (rr, wrr, lc, wlc, sed, nq, fo, ovf, dh, sh, mh, lblc, lblcr, twos)
}


def scheduler_class(name: Scheduler) -> type[SchedulerImpl]:
    """The class that mirrors the kernel module ip_vs_<name>."""
    return _CLASSES[name.value]
