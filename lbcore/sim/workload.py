"""Workloads for what-if runs: many clients, Poisson arrivals, exponential session lengths.

A :class:`Workload` is a seeded description; :func:`run` plays it on a :class:`~lbcore.sim.SimBackend` and
returns what happened, so a script can ask "how many sessions move when gateway 2 fails" by
running the same workload twice, or by comparing :meth:`~lbcore.sim.SimBackend.which` before and after.
"""

from __future__ import annotations

import heapq
import ipaddress
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import attrs

from lbcore._fields import as_address, number, value_object
from lbcore.enums import Protocol
from lbcore.errors import InvalidField
from lbcore.model import IPAddress

if TYPE_CHECKING:  # the backend's what-if engine builds on workloads: no import back at run time
    from lbcore.sim.backend import Connection, SimBackend


def clients_in(network: str, count: int) -> list[IPAddress]:
    """The first ``count`` host addresses of ``network`` (e.g. ``"198.51.100.0/24"``).

    Raises:
        InvalidField: the network is malformed or too small.
    """
    try:
        net = ipaddress.ip_network(network, strict=False)
    except ValueError:
        raise InvalidField("clients_in", "network", network, "is not a network") from None
    hosts: list[IPAddress] = []
    for address in net.hosts():
        if len(hosts) == count:
            break
        hosts.append(address)
    if len(hosts) < count:
        raise InvalidField("clients_in", "count", count, f"is more than {network} holds")
    return hosts


def _as_clients(clients: Iterable[IPAddress]) -> tuple[IPAddress, ...]:
    # A typed converter: attrs' plugin cannot solve the builtin tuple's type variable for mypy.
    return tuple(clients)


@value_object
@attrs.frozen
class Workload:
    """Clients opening sessions to one virtual service.

    Args:
        vip: the virtual IP; ``vport`` its port; ``protocol`` tcp or udp.
        clients: the client addresses (see :func:`clients_in`).
        rate: new sessions per second over all clients (a Poisson process).
        mean_session: mean session length in seconds (exponentially distributed).
        duration: seconds during which sessions start.
        seed: seed of the workload's own random source (separate from the simulator's).
        mark: firewall mark the packets carry (for fwmark services).

    .. versionadded:: 0.1
    """

    vip: IPAddress = attrs.field(converter=as_address)
    vport: int
    clients: Sequence[IPAddress] = attrs.field(converter=_as_clients)
    rate: float = attrs.field(default=100.0, validator=number(0.0, unit="sessions per second"))
    mean_session: float = attrs.field(default=30.0, validator=number(0.0))
    duration: float = attrs.field(default=60.0, validator=number(0.0))
    protocol: Protocol = attrs.field(default=Protocol.TCP, converter=Protocol)
    seed: int = 0
    mark: int = 0

    def __attrs_post_init__(self) -> None:
        if not self.clients:
            raise InvalidField("Workload", "clients", self.clients, "is empty")

    def sessions(self) -> Iterator[tuple[float, float, IPAddress]]:
        """(start, end, client) for every session, in start order; deterministic for the seed."""
        rng = random.Random(self.seed)
        t = rng.expovariate(self.rate)
        while t < self.duration:
            yield t, t + rng.expovariate(1.0 / self.mean_session), rng.choice(self.clients)
            t += rng.expovariate(self.rate)


@attrs.frozen
class WorkloadResult:
    """What a workload run did.

    Attributes:
        opened: sessions a real server took.
        refused: sessions IPVS took no real server for.
        per_real_server: sessions per ``rip:rport``.
        assignments: (client, ``rip:rport`` or None) per session, in start order.
    """

    opened: int
    refused: int
    per_real_server: Counter[str]
    assignments: tuple[tuple[IPAddress, str | None], ...]


def run(sim: SimBackend, workload: Workload) -> WorkloadResult:
    """Play ``workload`` on ``sim``, starting now; the clock ends after the last session closes.

    Raises:
        InvalidField: the simulator's clock is not virtual.
    """
    start = sim.clock.now()
    pending: list[tuple[float, int, Connection]] = []  # session ends, by time
    per_rs: Counter[str] = Counter()
    assignments: list[tuple[IPAddress, str | None]] = []
    refused = 0
    for n, (begin, end, client) in enumerate(workload.sessions()):
        while pending and pending[0][0] <= begin:
            when, _, conn = heapq.heappop(pending)
            sim.run_until(start + when)
            sim.disconnect(conn)
        sim.run_until(start + begin)
        opened = sim.connect(client, workload.vip, workload.vport, protocol=workload.protocol, mark=workload.mark)
        if opened is None:
            refused += 1
            assignments.append((client, None))
            continue
        per_rs[opened.endpoint] += 1
        assignments.append((client, opened.endpoint))
        heapq.heappush(pending, (end, n, opened))
    while pending:
        when, _, conn = heapq.heappop(pending)
        sim.run_until(start + when)
        sim.disconnect(conn)
    return WorkloadResult(len(assignments) - refused, refused, per_rs, tuple(assignments))
