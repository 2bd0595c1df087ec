"""A whole deployment on the simulator: its services and rules applied, its health checks running.

`SimDeployment` is what a what-if run (``lbcore.sim.whatif``, behind :mod:`lbcore.whatif`) and the pytest plugin
(:mod:`lbcore.testing.pytest_plugin`) both play traffic on. The simulator and the health monitor
share one :class:`~lbcore.clock.VirtualClock`; time moves only in :meth:`SimDeployment.run_until`
(or :meth:`~SimDeployment.advance`), which fires the checks, the data plane's timers and the
failures and recoveries scheduled, in time order.

A real server that fails in a health-checked service stops answering its checks (a
:class:`~lbcore.health.probers.SimFleet` failure), and the monitor finds it down and quiesces, removes or
drains it with the service's own policy. In a service without checks nothing would notice, so the
failure is a direct removal of the real server at that time (and a recovery adds it back).

.. versionadded:: 0.4
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import TYPE_CHECKING

from lbcore.balancer import Balancer
from lbcore.clock import VirtualClock
from lbcore.deployment import Deployment
from lbcore.enums import Protocol
from lbcore.errors import InvalidField
from lbcore.health import Event, Monitor, SimProber
from lbcore.model import IPAddress, RealServer, VirtualService
from lbcore.sim.workload import clients_in
from lbcore.whatif import TimelineEvent, director_only

if TYPE_CHECKING:  # SimBackend.what_if plays scenarios on SimDeployments: no import back at run time
    from lbcore.sim.backend import Connection, SimBackend


class SimDeployment:
    """A deployment applied to a simulator, with its health checks on the simulator's virtual clock.

    Args:
        deployment: the deployment. Its floating IPs, other hosts, HA pair and daemon settings
            change no scheduling decision and are left out (:attr:`notes` says so).
        sim: the simulator, new (``SimBackend()``), on a :class:`~lbcore.clock.VirtualClock`.
        seed: seed of the checks' jitter.

    Raises:
        InvalidField: the simulator's clock is not virtual.
        LBError: the deployment does not apply to the simulator (e.g. a scheduler the kernel
            release lacks: :class:`~lbcore.errors.Unsupported`).

    .. versionadded:: 0.4
    """

    def __init__(self, deployment: Deployment, sim: SimBackend, *, seed: int = 0) -> None:
        if not isinstance(sim.clock, VirtualClock):
            raise InvalidField("SimDeployment", "sim", sim.clock, "does not run on a VirtualClock")
        self.deployment, notes = director_only(deployment)
        #: What was left out of the simulation, and why.
        self.notes: tuple[str, ...] = notes
        self.clock: VirtualClock = sim.clock
        self.sim = sim
        self.balancer: Balancer[SimBackend] = Balancer(self.sim)
        self.balancer.apply(self.deployment.table())
        checked = self.deployment.checked()
        self._checked_keys = {c.key for c in checked}
        self.prober: SimProber | None = None
        #: The health monitor of the checked services (None when there are none).
        self.monitor: Monitor | None = None
        if checked:
            self.prober = SimProber(self.clock)
            self.monitor = Monitor(self.balancer, checked, self.prober, seed=seed)
            self.monitor.start()
        #: The failures and recoveries carried out so far, and the direct removals and restorations
        #: of real servers in services without checks (the monitor's own events are in :attr:`monitor`).
        self.changes: list[TimelineEvent] = []
        self._pending: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0

    # -- time --------------------------------------------------------------------------------------

    def now(self) -> float:
        """The virtual time."""
        return self.clock.now()

    def run_until(self, when: float) -> None:
        """Move time to ``when``: failures and recoveries due, health checks and the data plane's
        timers fire in time order.

        Raises:
            InvalidField: ``when`` is in the past.
        """
        if when < self.clock.now():
            raise InvalidField("SimDeployment", "when", when, f"is before now ({self.clock.now()})")
        while self._pending and self._pending[0][0] <= when:
            at, _, act = heapq.heappop(self._pending)
            self._move(at)
            act()
        self._move(when)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass.

        Raises:
            InvalidField: ``seconds`` is negative.
        """
        if seconds < 0:
            raise InvalidField("SimDeployment", "seconds", seconds, "is negative")
        self.run_until(self.clock.now() + seconds)

    def _move(self, when: float) -> None:
        if self.prober is not None:
            self.prober.run_until(when)
        self.sim.run_until(when)

    # -- traffic -----------------------------------------------------------------------------------

    @staticmethod
    def clients(count: int, network: str = "198.18.0.0/15") -> list[IPAddress]:
        """The first ``count`` addresses of ``network``, as clients.

        Raises:
            InvalidField: the network is malformed or too small.
        """
        return clients_in(network, count)

    def connect(self, client: object, vip: object, port: int, *, protocol: Protocol | str = Protocol.TCP,
                mark: int | None = None, client_port: int | None = None) -> Connection | None:
        """Open a connection now, as :meth:`lbcore.sim.SimBackend.connect` does; None if refused.

        Raises:
            InvalidField: an address or the protocol is not valid.
        """
        return self.sim.connect(client, vip, port, protocol=protocol, mark=mark, client_port=client_port)

    def close(self, connection: Connection) -> None:
        """Close a connection as its client does."""
        self.sim.disconnect(connection)

    def which(self, client: object, vip: object, port: int, *, protocol: Protocol | str = Protocol.TCP,
              mark: int | None = None) -> str | None:
        """The ``rip:rport`` a new connection from ``client`` would reach now, or None.

        Raises:
            InvalidField: an address or the protocol is not valid.
        """
        return self.sim.which(client, vip, port, protocol=protocol, mark=mark)

    # -- failures ----------------------------------------------------------------------------------

    def fail(self, address: object, at: float | None = None) -> None:
        """The real server at ``address`` (every port, every service) stops answering at ``at`` (now).

        Health-checked services find it down with their policy as time moves; in the others it is
        removed at ``at``.

        Raises:
            InvalidField: ``address`` is no real server of the deployment, or ``at`` is in the past.
        """
        self._change(address, at, up=False)

    def recover(self, address: object, at: float | None = None) -> None:
        """The real server at ``address`` answers again from ``at`` (now).

        Raises:
            InvalidField: ``address`` is no real server of the deployment, or ``at`` is in the past.
        """
        self._change(address, at, up=True)

    def _change(self, address: object, at: float | None, up: bool) -> None:
        verb = "recover" if up else "fail"
        when = self.clock.now() if at is None else at
        if isinstance(when, bool) or not isinstance(when, (int, float)) or when < self.clock.now():
            raise InvalidField(f"SimDeployment.{verb}", "at", at, f"is not a time from now ({self.clock.now()}) on")
        services = [s for s in self.deployment.virtual_services()
                    if any(str(rs.address) == str(address) for rs in s.real_servers)]
        if not services:
            raise InvalidField(f"SimDeployment.{verb}", "address", address, "is not a real server of the deployment")
        real = next(rs.address for s in services for rs in s.real_servers if str(rs.address) == str(address))
        if self.prober is not None:
            (self.prober.fleet.recover if up else self.prober.fleet.fail)(real, at=float(when))
        unchecked = [s for s in services if s.key not in self._checked_keys]

        def act() -> None:
            now = self.clock.now()
            self.changes.append(TimelineEvent(now, verb, str(real), None))
            for svc in unchecked:
                for rs in svc.real_servers:
                    if rs.address == real and self._direct(svc, rs, up):
                        self.changes.append(TimelineEvent(now, "restored" if up else "removed", str(real),
                                                          str(svc.key)))

        self._seq += 1
        heapq.heappush(self._pending, (float(when), self._seq, act))
        if when == self.clock.now():
            self.run_until(when)

    def _direct(self, svc: VirtualService, rs: RealServer, up: bool) -> bool:
        held = self.balancer.read().get(svc.key)
        present = held is not None and held.real_server(rs.address, rs.port) is not None
        if up and not present:
            self.balancer.add_real_server(svc.key, rs)
            return True
        if not up and present:
            self.balancer.delete_real_server(svc.key, rs.address, rs.port)
            return True
        return False

    # -- what happened -------------------------------------------------------------------------------

    @property
    def health_events(self) -> list[Event]:
        """The health monitor's events so far (down, up, drained, quorum...), in order."""
        return list(self.monitor.events) if self.monitor is not None else []

    def weights(self, service: VirtualService | None = None) -> dict[str, int]:
        """``rip:rport`` -> weight of a service's real servers as the simulator holds them now
        (the only service's by default).

        Raises:
            InvalidField: no service is named and the deployment has several, or none.
        """
        services = self.deployment.virtual_services()
        if service is None:
            if len(services) != 1:
                raise InvalidField("SimDeployment.weights", "service", None,
                                   f"must be named: the deployment has {len(services)} services")
            service = services[0]
        held = self.balancer.read().get(service.key)
        return {} if held is None else {rs.endpoint: rs.weight for rs in held.real_servers}
