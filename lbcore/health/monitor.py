"""The health monitor: one engine that schedules checks, keeps each real server's state and acts on it.

The engine never touches a socket or reads the time itself. A :class:`Prober` gives it both: the
clock, timers, and the outcome of each probe. :class:`~lbcore.health.probers.AsyncioProber` asks real
servers on asyncio; :class:`~lbcore.health.probers.SimProber` asks a simulated fleet on a virtual
clock. So a failover plan runs the same code in a unit test and in production.

Every change the monitor makes is planned with :func:`lbcore.plan` for the one service it concerns
and carried out by :meth:`lbcore.Balancer.execute`: the same checks as every other change.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import attrs

from lbcore._fields import (
    any_port,
    as_address,
    as_dict,
    boolean,
    instance_of,
    int_in,
    mapping_of,
    member_of,
    number,
    optional_unicast,
    refuse,
    to_enum,
    value_object,
)
from lbcore.backend import ConnectionCounts
from lbcore.balancer import Balancer
from lbcore.clock import Clock
from lbcore.enums import Protocol as L4Protocol
from lbcore.errors import InvalidField, LBError, RealServerNotFound, ServiceNotFound
from lbcore.health.checks import Check, HealthState, Policy, Probe, probe_for
from lbcore.model import INT_MAX, IPAddress, RealServer, ServiceKey, VirtualService
from lbcore.plan import plan
from lbcore.table import Table

#: ``done(ok, detail)``: how a prober reports one attempt.
Done = Callable[[bool, str], None]
#: ``count(service, address, port)``: a real server's active + inactive connections, None if unknown.
ConnectionCount = Callable[[ServiceKey, IPAddress, int], "int | None"]


class Timer(Protocol):
    """A scheduled callback."""

    def cancel(self) -> None:
        """Do not run it (a no-op once it ran)."""
        ...


class Prober(Protocol):
    """Time and probes for the monitor: the only thing that differs between asyncio and the simulator."""

    @property
    def clock(self) -> Clock:
        """The clock every timer and event time is read from."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback()`` once the clock reaches ``when``."""
        ...

    def probe(self, probe: Probe, done: Done) -> None:
        """Start one attempt of ``probe``; call ``done`` once, later, with its outcome.

        Not guaranteed: that ``done`` runs before the next timer due at the same time.
        """
        ...


class Action(str, enum.Enum):
    """What a real server's service does when its check says it is down."""

    QUIESCE = "quiesce"  # weight 0: no new connections, live ones continue (keepalived inhibit_on_failure)
    REMOVE = "remove"  # delete it at once
    DRAIN = "drain"  # weight 0, then delete once its connections are gone or drain_timeout passed

    def __str__(self) -> str:
        return self.value


class EventKind(str, enum.Enum):
    """What an :class:`Event` reports."""

    UP = "up"
    DOWN = "down"
    DRAINED = "drained"
    FALLBACK_ON = "fallback_on"
    FALLBACK_OFF = "fallback_off"
    QUORUM_UP = "quorum_up"
    QUORUM_DOWN = "quorum_down"
    ERROR = "error"  # a change was refused; the detail says why

    def __str__(self) -> str:
        return self.value


def _as_event_kind(value: object) -> Any:
    return to_enum(EventKind, value)


@value_object
@attrs.frozen
class Event:
    """Something the monitor saw or did, at a time read from its clock.

    Attributes:
        kind: what happened.
        time: the clock's reading.
        service: the virtual service it concerns.
        address, port: the real server (the fallback server's for fallback events); None for
            quorum and error events.
        detail: a human-readable note.

    .. versionadded:: 0.1
    """

    kind: EventKind = attrs.field(converter=_as_event_kind, validator=member_of(EventKind))
    time: float = attrs.field(validator=number(0.0, inclusive=True))
    service: ServiceKey = attrs.field(validator=instance_of(ServiceKey))
    address: IPAddress | None = attrs.field(default=None, converter=as_address, validator=optional_unicast)
    port: int | None = attrs.field(default=None, validator=attrs.validators.optional(any_port))
    detail: str = attrs.field(default="", validator=instance_of(str))


@value_object
@attrs.frozen
class CheckResult:
    """The outcome of one check (after its retries), before rise and fall count it.

    .. versionadded:: 0.1
    """

    probe: Probe = attrs.field(validator=instance_of(Probe))
    time: float = attrs.field(validator=number(0.0, inclusive=True))
    ok: bool = attrs.field(validator=boolean)
    detail: str = attrs.field(validator=instance_of(str))


def _as_action(value: object) -> Any:
    return to_enum(Action, value)


_non_negative = int_in(0, INT_MAX, "a weight sum")


@value_object
@attrs.frozen(kw_only=True)
class CheckedService:
    """A virtual service, as configured, with the check every real server of it gets.

    The real servers' weights in ``service`` are the configured ones: a server that comes back up
    gets its weight back.

    Args:
        service: the service and its real servers, as they should be when every one is up.
        check: the check each real server gets, unless ``checks`` names another for it.
        checks: checks of particular real servers, by endpoint (``"198.51.100.1:80"``).
        policy: how often, and how many answers change a state.
        action: quiesce, remove or drain a real server that is down.
        drain_timeout: seconds a draining real server keeps its live connections at most.
        drain_poll: seconds between two looks at a draining server's connections.
        fallback: the sorry server, added while the quorum is lost.
        quorum: the sum of up weights the service needs (1: at least one real server up).
        hysteresis: the quorum is lost below ``quorum - hysteresis`` and regained at
            ``quorum + hysteresis`` (keepalived).

    .. versionadded:: 0.1
    """

    service: VirtualService = attrs.field(validator=instance_of(VirtualService))
    check: Check = attrs.field(validator=instance_of(Check))
    checks: Mapping[str, Check] = attrs.field(factory=dict, converter=as_dict, hash=False,
                                              validator=mapping_of(str, Check, "a mapping of names to checks"))
    policy: Policy = attrs.field(factory=Policy, validator=instance_of(Policy))
    action: Action = attrs.field(default=Action.QUIESCE, converter=_as_action)
    drain_timeout: float = attrs.field(default=300.0, validator=number(0.0))
    drain_poll: float = attrs.field(default=1.0, validator=number(0.0))
    fallback: RealServer | None = None
    quorum: int = attrs.field(default=1, validator=_non_negative)
    hysteresis: int = attrs.field(default=0, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        fields = attrs.fields(CheckedService)
        if not isinstance(self.action, Action):
            refuse(self, fields.action, self.action, "is not one of: quiesce, remove, drain")
        if self.fallback is not None:
            if not isinstance(self.fallback, RealServer):
                refuse(self, fields.fallback, self.fallback, "is not a RealServer")
            self.service.check_real_server(self.fallback)
            if self.service.real_server(self.fallback.address, self.fallback.port) is not None:
                refuse(self, fields.fallback, self.fallback.endpoint, "is one of the service's real servers")
        endpoints = {rs.endpoint for rs in self.service.real_servers}
        for endpoint, check in self.checks.items():
            if endpoint not in endpoints:
                refuse(self, fields.checks, endpoint, "is not a real server of the service")
            if not isinstance(check, Check):
                refuse(self, fields.checks, check, "is not a Check")
        for rs in self.service.real_servers:
            self.probe(rs)  # a fwmark service's real servers have port 0: the check must name one

    @property
    def key(self) -> ServiceKey:
        """The service's identity."""
        return self.service.key

    def probe(self, rs: RealServer) -> Probe:
        """The probe that checks ``rs``."""
        return probe_for(self.checks.get(rs.endpoint, self.check), self.policy, rs.address, rs.port)


class _CheckRun:
    """One probe's schedule and state; shared by every service that checks the same way."""

    __slots__ = ("attempt", "generation", "probe", "started", "state", "streak", "timer")

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.state = probe.policy.initial
        self.streak = 0  # results in a row against the current state
        self.attempt = 0
        self.started = 0.0
        self.generation = 0  # bumped on stop: outcomes of older attempts are ignored
        self.timer: Timer | None = None

    def stop(self) -> None:
        self.generation += 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _ServiceRun:
    """What the monitor holds for one service: its config, quorum state and draining servers."""

    __slots__ = ("config", "drain_timers", "draining", "quorum_up")

    def __init__(self, config: CheckedService) -> None:
        self.config = config
        self.quorum_up = True
        self.draining: dict[tuple[IPAddress, int], float] = {}  # real server -> deadline
        self.drain_timers: dict[tuple[IPAddress, int], Timer] = {}

    def stop_drain(self, key: tuple[IPAddress, int]) -> None:
        self.draining.pop(key, None)
        timer = self.drain_timers.pop(key, None)
        if timer is not None:
            timer.cancel()


class Monitor:
    """Check real servers, and keep their services in the backend as the checks say.

    Events report changes: the initial states emit none, except quorum_down (and fallback_on)
    for a service whose quorum is lost from the start.

    Args:
        balancer: carries out every change.
        services: the checked services.
        prober: the clock, timers and probes (asyncio or simulated).
        seed: seed of the jitter of first checks.
        connections: counts a real server's connections for drain; by default the sim's and
            the ipvs backend's counters are read, and other backends drain until the timeout.

    Raises:
        InvalidField: two services have the same identity.

    .. versionadded:: 0.1
    """

    def __init__(self, balancer: Balancer, services: Iterable[CheckedService], prober: Prober, *,
                 seed: int = 0, connections: ConnectionCount | None = None) -> None:
        self.balancer = balancer
        self.prober = prober
        #: Every event so far, in order.
        self.events: list[Event] = []
        self._random = random.Random(seed)
        self._count = connections
        self._listeners: list[Callable[[Event], None]] = []
        self._result_listeners: list[Callable[[CheckResult], None]] = []
        self._checks: dict[Probe, _CheckRun] = {}
        self._services: dict[ServiceKey, _ServiceRun] = {}
        self._started = False
        self._ran = False  # start() ran once: a later start() resumes, it does not begin afresh
        self._configure(list(services))

    @property
    def clock(self) -> Clock:
        """The prober's clock."""
        return self.prober.clock

    # -- observers -------------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        """Call ``callback(event)`` for every event from now on."""
        self._listeners.append(callback)

    def queue(self) -> asyncio.Queue[Event]:
        """An asyncio queue that receives every event from now on: the event stream, for a consumer task."""
        events: asyncio.Queue[Event] = asyncio.Queue()
        self.subscribe(events.put_nowait)
        return events

    def on_result(self, callback: Callable[[CheckResult], None]) -> None:
        """Call ``callback(result)`` after every check, whether or not the state changes."""
        self._result_listeners.append(callback)

    def state(self, service: VirtualService | ServiceKey, address: object, port: int) -> HealthState:
        """The health state of one real server of a service.

        Raises:
            ServiceNotFound, RealServerNotFound: the monitor does not check it.
        """
        key = service.key if isinstance(service, VirtualService) else service
        run = self._services.get(key)
        if run is None:
            raise ServiceNotFound(f"the monitor checks no service {key}")
        rs = run.config.service.real_server(address, port)
        if rs is None:
            raise RealServerNotFound(f"service {key} has no real server {address}:{port}")
        return self._checks[run.config.probe(rs)].state

    @property
    def probes(self) -> list[Probe]:
        """Every probe that runs, one per distinct (check, policy, address, port)."""
        return list(self._checks)

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Put every service in the backend as the initial states say, and start checking."""
        if self._started:
            return
        self._started = True
        first = not self._ran
        self._ran = True
        for run in self._checks.values():
            self._schedule_first(run)
        for svc in self._services.values():
            self._evaluate_quorum(svc, initial=first)
            self._sync(svc)
            for rs_key in list(svc.draining):  # drains that a stop() interrupted go on
                self._poll_drain(svc, rs_key)

    def stop(self) -> None:
        """Stop every check and drain timer; the backend keeps what it holds, and start() resumes."""
        self._started = False
        for run in self._checks.values():
            run.stop()
        for svc in self._services.values():
            for key in list(svc.drain_timers):
                svc.drain_timers.pop(key).cancel()

    def reload(self, services: Iterable[CheckedService]) -> None:
        """Replace the configuration; checks whose probe is unchanged keep their state and schedule.

        Services no longer configured are deleted from the backend.

        Raises:
            InvalidField: two services have the same identity.
        """
        old_services = self._services
        self._configure(list(services))
        for key, svc in old_services.items():
            for rs_key in list(svc.draining):
                if key not in self._services:
                    svc.stop_drain(rs_key)
            if key not in self._services and self._started:
                try:
                    if key in self.balancer.backend.read({key}).services:
                        self.balancer.delete_service(key)
                except LBError as exc:
                    self._emit(EventKind.ERROR, key, detail=str(exc))
        if self._started:
            for svc in self._services.values():
                self._evaluate_quorum(svc, initial=svc.config.key not in old_services)
                self._sync(svc)

    def _configure(self, configs: list[CheckedService]) -> None:
        services: dict[ServiceKey, _ServiceRun] = {}
        checks: dict[Probe, _CheckRun] = {}
        for config in configs:
            if config.key in services:
                raise InvalidField("Monitor", "services", str(config.key), "appears twice")
            svc = self._services.get(config.key)
            if svc is None:
                svc = _ServiceRun(config)
            else:
                svc.config = config
            services[config.key] = svc
            for rs in config.service.real_servers:
                probe = config.probe(rs)
                if probe not in checks:
                    checks[probe] = self._checks.get(probe) or self._new_run(probe)
        for probe, run in self._checks.items():
            if probe not in checks:
                run.stop()
        for svc in services.values():  # a draining server that is now gone, or up, stops draining
            for rs_key in list(svc.draining):
                kept = svc.config.service.real_server(*rs_key)
                if kept is None or checks[svc.config.probe(kept)].state is HealthState.UP:
                    svc.stop_drain(rs_key)
        self._services = services
        self._checks = checks

    def _new_run(self, probe: Probe) -> _CheckRun:
        run = _CheckRun(probe)
        if self._started:
            self._schedule_first(run)
        return run

    # -- checking ----------------------------------------------------------------------------------

    def _schedule_first(self, run: _CheckRun) -> None:
        jitter = run.probe.policy.jitter
        delay = self._random.uniform(0.0, jitter) if jitter else 0.0
        gen = run.generation
        run.timer = self.prober.call_at(self.clock.now() + delay, lambda: self._begin(run, gen))

    def _begin(self, run: _CheckRun, gen: int) -> None:
        if gen != run.generation:
            return
        run.started = self.clock.now()
        run.attempt = 0
        self._attempt(run, gen)

    def _attempt(self, run: _CheckRun, gen: int) -> None:
        if gen != run.generation:
            return
        run.timer = None
        self.prober.probe(run.probe, lambda ok, detail: self._done(run, gen, ok, detail))

    def _done(self, run: _CheckRun, gen: int, ok: bool, detail: str) -> None:
        if gen != run.generation:
            return  # stopped or reloaded away while the attempt ran
        policy = run.probe.policy
        now = self.clock.now()
        if not ok and run.attempt < policy.retry:
            run.attempt += 1
            run.timer = self.prober.call_at(now + policy.delay_before_retry, lambda: self._attempt(run, gen))
            return
        self._record(run, ok, detail, now)
        # Start to start, so that time to down is interval * fall + timeout whatever the answers took.
        run.timer = self.prober.call_at(max(run.started + policy.interval, now), lambda: self._begin(run, gen))

    def _record(self, run: _CheckRun, ok: bool, detail: str, now: float) -> None:
        result = CheckResult(run.probe, now, ok, detail)
        for listener in list(self._result_listeners):
            listener(result)
        policy = run.probe.policy
        if (run.state is HealthState.UP) == ok:
            run.streak = 0  # an answer that agrees with the state resets the count against it
            return
        run.streak += 1
        if run.streak < (policy.rise if ok else policy.fall):
            return
        run.streak = 0
        run.state = HealthState.UP if ok else HealthState.DOWN
        for svc in list(self._services.values()):
            changed = [rs for rs in svc.config.service.real_servers if svc.config.probe(rs) == run.probe]
            if changed:
                self._real_servers_changed(svc, changed, run.state, detail)

    # -- acting ------------------------------------------------------------------------------------

    def _real_servers_changed(self, svc: _ServiceRun, changed: list[RealServer], state: HealthState,
                              detail: str) -> None:
        config = svc.config
        key = config.key
        drained: list[RealServer] = []
        for rs in changed:
            if state is HealthState.UP:
                svc.stop_drain(rs.key)
                self._emit(EventKind.UP, key, rs.address, rs.port, detail)
                continue
            self._emit(EventKind.DOWN, key, rs.address, rs.port, detail)
            if config.action is Action.DRAIN:
                if config.service.protocol is L4Protocol.UDP:
                    drained.append(rs)  # no connection to wait for: a datagram service drains at once
                else:
                    svc.draining[rs.key] = self.clock.now() + config.drain_timeout
        self._evaluate_quorum(svc)
        self._sync(svc)
        for rs in drained:
            self._emit(EventKind.DRAINED, key, rs.address, rs.port, "udp: removed at once")
        for rs in changed:
            if rs.key in svc.draining:
                self._poll_drain(svc, rs.key)

    def _poll_drain(self, svc: _ServiceRun, rs_key: tuple[IPAddress, int]) -> None:
        svc.drain_timers.pop(rs_key, None)
        deadline = svc.draining.get(rs_key)
        if deadline is None:
            return
        now = self.clock.now()
        count = self._connections(svc.config.key, *rs_key)
        if count == 0 or now >= deadline:
            svc.draining.pop(rs_key)
            note = "no connections left" if count == 0 else f"drain timeout, {count} connections left"
            self._emit(EventKind.DRAINED, svc.config.key, rs_key[0], rs_key[1], note)
            self._sync(svc)
            return
        when = min(now + svc.config.drain_poll, deadline)
        svc.drain_timers[rs_key] = self.prober.call_at(when, lambda: self._poll_drain(svc, rs_key))

    def _connections(self, key: ServiceKey, address: IPAddress, port: int) -> int | None:
        if self._count is not None:
            return self._count(key, address, port)
        # The sim and the ipvs backend count connections; a backend that does not (the iptables
        # backend's DNAT balancer: conntrack is not read) leaves a drain to its timeout.
        backend = self.balancer.backend
        found = backend.connection_counts(key) if isinstance(backend, ConnectionCounts) else None
        return None if found is None else int(found.get((address, port), 0))

    def _evaluate_quorum(self, svc: _ServiceRun, initial: bool = False) -> None:
        config = svc.config
        up = sum(rs.weight for rs in config.service.real_servers
                 if self._checks[config.probe(rs)].state is HealthState.UP)
        if initial:
            quorum_up = up >= config.quorum
        elif svc.quorum_up:
            quorum_up = up >= config.quorum - config.hysteresis
        else:
            quorum_up = up >= config.quorum + config.hysteresis
        if quorum_up == svc.quorum_up and not (initial and not quorum_up):
            return
        svc.quorum_up = quorum_up
        fallback = config.fallback
        note = f"up weight {up}, quorum {config.quorum} +/- {config.hysteresis}"
        self._emit(EventKind.QUORUM_UP if quorum_up else EventKind.QUORUM_DOWN, config.key, detail=note)
        if fallback is not None:
            kind = EventKind.FALLBACK_OFF if quorum_up else EventKind.FALLBACK_ON
            self._emit(kind, config.key, fallback.address, fallback.port)

    def _desired(self, svc: _ServiceRun) -> VirtualService:
        config = svc.config
        real_servers: list[RealServer] = []
        for rs in config.service.real_servers:
            if self._checks[config.probe(rs)].state is HealthState.UP:
                real_servers.append(rs)
            elif config.action is Action.QUIESCE or rs.key in svc.draining:
                real_servers.append(attrs.evolve(rs, weight=0))
        if not svc.quorum_up and config.fallback is not None:
            real_servers.append(config.fallback)
        return attrs.evolve(config.service, real_servers=real_servers)

    def _sync(self, svc: _ServiceRun) -> None:
        """Plan the one service against what the backend holds, and have the Balancer carry it out."""
        desired = self._desired(svc)
        try:
            ops = plan(self.balancer.backend.read({desired.key}), Table([desired]))
            self.balancer.execute(ops)
        except LBError as exc:
            self._emit(EventKind.ERROR, desired.key, detail=str(exc))

    def _emit(self, kind: EventKind, service: ServiceKey, address: IPAddress | None = None,
              port: int | None = None, detail: str = "") -> None:
        event = Event(kind, self.clock.now(), service, address, port, detail)
        self.events.append(event)
        for listener in list(self._listeners):
            listener(event)
