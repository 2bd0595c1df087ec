"""What-if runs: a seeded workload against a whole deployment, with failures at given times.

A :class:`Scenario` says what happens (how many clients, how fast they open sessions, how long
sessions last, which real servers fail and recover when); :func:`simulate` plays it on a backend
that can (the simulator: ``isinstance(backend, WhatIf)``) and returns a :class:`Result`: the load
on every real server, persistence hits, what each failure did, refused connections, and the load
over time. The ``lbcore simulate`` command prints it.

Every service of the deployment gets traffic: the scenario's rate is split evenly between them
(or goes to the one ``Scenario.service`` names); a fwmark service's packets carry its mark, to
a destination its :class:`~lbcore.rules.FirewallMark` rule matches. A failure of a real server in a
health-checked service goes through the health monitor with the service's own policy (found down
after its failed checks, then quiesced, removed or drained as configured); in a service without
checks, the real server is removed at the failure's time. The sessions moved by a failure are
counted by running the same workload without it and comparing session by session.

.. versionadded:: 0.4
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import attrs

from lbcore._fields import as_address, number, unicast, value_object
from lbcore.deployment import Deployment
from lbcore.errors import InvalidField, Unsupported
from lbcore.model import IPAddress
from lbcore.registry import open_backend

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is 3.11's; lbcore runs on 3.10

#: ``progress(done, total)``: how far a run is, in sessions played (every run of a scenario counted).
Progress = Callable[[int, int], None]

_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}
_TIME = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|min|m|h|)$")


def parse_time(text: str, owner: str = "Scenario", field: str = "time") -> float:
    """Seconds from text: ``30``, ``30s``, ``1.5m``, ``500ms``, ``2h``.

    Raises:
        InvalidField: the text is not a time.
    """
    match = _TIME.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidField(owner, field, text, "is not a time (e.g. 30s, 1.5m, 500ms)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _as_address(value: object) -> object:
    # ipvsadm writes an IPv6 address in brackets ([2001:db8::1]); take it either way.
    return as_address(value.strip("[]") if isinstance(value, str) else value)


def _at(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidField(type(inst).__name__, attribute.name, value, "is not a time in seconds >= 0")


@attrs.frozen(kw_only=True)
class _Cue:
    """What a failure and a recovery share: a real server's address, a time, and their text form."""

    #: The command-line option the text form comes from, named by errors.
    OPTION: ClassVar[str] = ""

    address: IPAddress = attrs.field(converter=_as_address, validator=unicast)
    at: float = attrs.field(validator=_at)

    @classmethod
    def parse(cls, text: str, option: str | None = None) -> Self:
        """``192.168.2.211@30s`` (the time takes s, ms, m, h, or none for seconds).

        Raises:
            InvalidField: the text is not ``ADDRESS@TIME``; the error names ``option``.
        """
        option = option or cls.OPTION
        if not isinstance(text, str) or text.count("@") != 1:
            raise InvalidField(option, "value", text, "is not ADDRESS@TIME (e.g. 192.168.2.211@30s)")
        address, when = text.split("@")
        at = parse_time(when, option, "time")
        try:
            return cls(address=address, at=at)
        except InvalidField as exc:
            raise InvalidField(option, exc.field, exc.value, exc.reason) from None

    def __str__(self) -> str:
        return f"{self.address}@{self.at:g}s"


@value_object
@attrs.frozen(kw_only=True)
class Failure(_Cue):
    """A real server (every port of its address, in every service) stops answering at ``at``.

    Args:
        address: the real server's address.
        at: seconds from the start of the run.

    .. versionadded:: 0.4
    """

    OPTION: ClassVar[str] = "--fail"


@value_object
@attrs.frozen(kw_only=True)
class Recovery(_Cue):
    """A failed real server answers again from ``at``.

    Args:
        address: the real server's address (a :class:`Failure` before ``at`` names it).
        at: seconds from the start of the run.

    .. versionadded:: 0.4
    """

    OPTION: ClassVar[str] = "--recover"


def _network(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    try:
        ipaddress.ip_network(value, strict=False)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise InvalidField(type(inst).__name__, attribute.name, value, "is not a network") from None


def _clients(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidField(type(inst).__name__, attribute.name, value, "is not a number of clients >= 1")


def _samples(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 100_000:
        raise InvalidField(type(inst).__name__, attribute.name, value, "is not a number of samples (2..100000)")


@value_object
@attrs.frozen(kw_only=True)
class Scenario:
    """A seeded workload and the failures that happen during it.

    Args:
        clients: how many client addresses open sessions (the first hosts of ``network``).
        network: where the IPv4 clients come from; ``network6`` for IPv6 services.
        rate: new sessions per second over all clients and services (Poisson arrivals).
        mean_session: mean session length in seconds (exponentially distributed).
        duration: seconds during which sessions start.
        seed: seed of the workload and of the simulator; a run is the same for the same seed.
        failures: real servers that fail, and when.
        recoveries: failed real servers that come back, and when.
        service: one service to send all traffic to (``-t 192.0.2.10:80``, ``-f 1``, or
            without the option letter); None splits the rate evenly between every service.
        samples: how many points the load over time has.

    Raises:
        InvalidField: a field is out of range, or a recovery names no earlier failure.

    .. versionadded:: 0.4
    """

    clients: int = attrs.field(default=100, validator=_clients)
    network: str = attrs.field(default="198.18.0.0/15", validator=_network)
    network6: str = attrs.field(default="2001:db8:c::/64", validator=_network)
    rate: float = attrs.field(default=10.0, validator=number(0.0, unit="sessions per second"))
    mean_session: float = attrs.field(default=30.0, validator=number(0.0))
    duration: float = attrs.field(default=60.0, validator=number(0.0))
    seed: int = attrs.field(default=0, validator=attrs.validators.instance_of(int))
    failures: tuple[Failure, ...] = attrs.field(default=(), converter=tuple)
    recoveries: tuple[Recovery, ...] = attrs.field(default=(), converter=tuple)
    service: str | None = None
    samples: int = attrs.field(default=200, validator=_samples)

    def __attrs_post_init__(self) -> None:
        fields = attrs.fields(Scenario)
        for name, kind in ((fields.failures, Failure), (fields.recoveries, Recovery)):
            for item in getattr(self, name.name):
                if not isinstance(item, kind):
                    raise InvalidField("Scenario", name.name, item, f"is not a {kind.__name__}")
        for r in self.recoveries:
            if not any(f.address == r.address and f.at < r.at for f in self.failures):
                raise InvalidField("Scenario", "recoveries", str(r), "follows no failure of that address")


@attrs.frozen
class RealServerLoad:
    """The sessions one real server of one service took.

    Attributes:
        service: the service, as ipvsadm names it (``-t 192.0.2.10:80``).
        endpoint: ``rip:rport`` (a fwmark service's real servers show the port the traffic used).
        sessions: sessions it took.
        share: its part of the sessions its service took (0..1).
    """

    service: str
    endpoint: str
    sessions: int
    share: float


@attrs.frozen
class FailureOutcome:
    """What one failure did.

    Attributes:
        failure: the failure.
        handling: per service holding the real server, what happened to it
            (``{"-t 192.0.2.10:80": "quiesce after 3 failed checks, every 2 s"}``).
        detected: when the real server was taken out of the last of its services (the health
            check's down, or the failure itself without a check); None if not before the run ended.
        moved: sessions that reached another real server than in the same run without this failure
            (with the failures before it).
        open_at_failure: sessions open on the real server when it failed (their clients lose them).
        sent_to_failed: sessions that reached it after it failed (and before it recovered): lost,
            while the check had not found it down yet, or held there by persistence.
    """

    failure: Failure
    handling: Mapping[str, str]
    detected: float | None
    moved: int
    open_at_failure: int
    sent_to_failed: int


@attrs.frozen
class TimelineEvent:
    """Something that happened to a real server during the run (for reports and plots).

    Attributes:
        time: seconds from the start.
        kind: ``fail`` and ``recover`` (the scenario's), ``down``, ``up``, ``drained``,
            ``fallback_on``... (the health monitor's), ``removed`` and ``restored`` (a service
            without checks).
        address: the real server's address (None for a quorum event).
        service: the service, as ipvsadm names it (None for the scenario's own events).
    """

    time: float
    kind: str
    address: str | None
    service: str | None


@attrs.frozen
class Session:
    """One session of the run, and where it went.

    Attributes:
        start, end: seconds from the start of the run.
        service: the service it was sent to, as ipvsadm names it.
        client: the client's address.
        endpoint: ``rip:rport`` of the real server that took it, or None (refused).
    """

    start: float
    end: float
    service: str
    client: IPAddress
    endpoint: str | None


@attrs.frozen
class Result:
    """What a :class:`Scenario` did to a deployment.

    Attributes:
        scenario: the scenario.
        sessions: sessions started.
        opened: sessions a real server took.
        refused: sessions no real server took (IPVS dropped their first packet).
        persistence_hits: sessions whose real server came from their client's persistence
            template rather than from the scheduler.
        real_servers: the load per real server and service, in the order of the deployment.
        failures: what each failure did, in time order.
        events: failures, recoveries and what the health monitor did, in time order.
        times: the sample times of :attr:`load` (seconds from the start, over the duration).
        load: per ``(service, endpoint)``, the sessions open on it at each of :attr:`times`. A real
            server that fails loses its open sessions then, and carries none while it is failed.
        notes: what the run left out, and why (parts of the deployment it does not simulate).
        log: every session, in start order (not in :meth:`to_json`: it can be long).
    """

    scenario: Scenario
    sessions: int
    opened: int
    refused: int
    persistence_hits: int
    real_servers: tuple[RealServerLoad, ...]
    failures: tuple[FailureOutcome, ...]
    events: tuple[TimelineEvent, ...]
    times: tuple[float, ...]
    load: Mapping[tuple[str, str], tuple[int, ...]]
    notes: tuple[str, ...] = ()
    log: tuple[Session, ...] = attrs.field(default=(), repr=False)

    def to_json(self) -> dict[str, Any]:
        """The result as plain JSON values (the schema ``lbcore simulate --output json`` prints)."""
        s = self.scenario
        return {
            "scenario": {"clients": s.clients, "rate": s.rate, "mean_session": s.mean_session,
                         "duration": s.duration, "seed": s.seed, "service": s.service,
                         "failures": [str(f) for f in s.failures],
                         "recoveries": [str(r) for r in s.recoveries]},
            "sessions": self.sessions,
            "opened": self.opened,
            "refused": self.refused,
            "persistence_hits": self.persistence_hits,
            "real_servers": [{"service": r.service, "endpoint": r.endpoint, "sessions": r.sessions,
                              "share": round(r.share, 6)} for r in self.real_servers],
            "failures": [{"address": str(f.failure.address), "at": f.failure.at, "handling": dict(f.handling),
                          "detected": f.detected, "moved": f.moved, "open_at_failure": f.open_at_failure,
                          "sent_to_failed": f.sent_to_failed} for f in self.failures],
            "events": [{"time": e.time, "kind": e.kind, "address": e.address, "service": e.service}
                       for e in self.events],
            "load": {"times": list(self.times),
                     "series": [{"service": svc, "endpoint": ep, "open": list(values)}
                                for (svc, ep), values in self.load.items()]},
            "notes": list(self.notes),
        }


#: The parts of a deployment that change no scheduling decision on the director. A simulation
#: leaves them out, and says so.
NOT_SIMULATED = ("floating_ips", "hosts", "ha", "daemon")


def director_only(deployment: Deployment) -> tuple[Deployment, tuple[str, ...]]:
    """The deployment without what a simulation of the director leaves out, and a note saying what.

    Raises:
        InvalidField: ``deployment`` is not a Deployment.
    """
    if not isinstance(deployment, Deployment):
        raise InvalidField("simulate", "deployment", deployment, "is not a Deployment")
    left_out = [name for name in NOT_SIMULATED if getattr(deployment, name)]
    if not left_out:
        return deployment, ()
    note = f"not simulated (no scheduling decision on the director depends on them): {', '.join(left_out)}"
    return attrs.evolve(deployment, floating_ips=(), hosts=(), ha=None, daemon=None), (note,)


@runtime_checkable
class WhatIf(Protocol):
    """Optional feature: a backend that plays a :class:`Scenario` against a deployment by itself.

    The simulator is one (:meth:`lbcore.sim.SimBackend.what_if`); a kernel backend is not: it
    cannot make a real server fail on cue. Ask with ``isinstance(backend, WhatIf)``.

    .. versionadded:: 0.4
    """

    def what_if(self, deployment: Deployment, scenario: Scenario, progress: Progress | None = None) -> Result:
        """Play ``scenario`` against ``deployment``; leave this backend's own state as it was."""
        ...


def simulate(deployment: Deployment, scenario: Scenario, *, backend: str = "sim",
             progress: Progress | None = None, **options: Any) -> Result:
    """Play ``scenario`` against ``deployment`` on the backend named (the simulator by default).

    Args:
        deployment: the deployment; its floating IPs, other hosts, HA pair and daemon settings
            are left out of the run (and said so in :attr:`Result.notes`).
        scenario: the workload and its failures.
        backend: the backend's name; it must be :class:`WhatIf`.
        progress: called as sessions are played, with (done, total).
        **options: the backend's options (the simulator's ``kernel``, for one).

    Raises:
        Unsupported: the backend cannot run what-if scenarios.
        InvalidField: the scenario does not fit the deployment (a failure names no real server,
            ``service`` names no service).
        LBError: the deployment cannot be applied to the simulator.
    """
    opened = open_backend(backend, **options)
    try:
        if not isinstance(opened, WhatIf):
            raise Unsupported(opened.name, "what-if", "cannot make real servers fail on cue; use the sim backend")
        return opened.what_if(deployment, scenario, progress)
    finally:
        opened.close()


def by_service(real_servers: Sequence[RealServerLoad]) -> dict[str, list[RealServerLoad]]:
    """The loads grouped by service, in order."""
    grouped: dict[str, list[RealServerLoad]] = {}
    for load in real_servers:
        grouped.setdefault(load.service, []).append(load)
    return grouped
