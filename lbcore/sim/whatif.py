"""The simulator's what-if engine: a :class:`~lbcore.whatif.Scenario` played against a deployment.

One run applies the deployment to a fresh simulator, starts the health monitor on the same virtual
clock (a :class:`~lbcore.health.SimProber` whose :class:`~lbcore.health.SimFleet` fails and
recovers real servers as the scenario says), and plays the sessions of every service in time
order. A scenario with N failures runs N + 1 times, the k-th with the first k failures, so that
the sessions each failure moves are those that land elsewhere than in the run before it: the
workload is seeded apart from the simulator, so every run starts the same sessions at the same
times from the same clients.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from lbcore.clock import VirtualClock
from lbcore.deployment import Deployment
from lbcore.enums import Protocol
from lbcore.errors import InvalidField
from lbcore.health import CheckedService
from lbcore.model import IPAddress, ServiceKey, VirtualService, format_endpoint
from lbcore.rules import FirewallMark
from lbcore.sim.deployment import SimDeployment
from lbcore.sim.workload import Workload, clients_in
from lbcore.whatif import (
    Failure,
    FailureOutcome,
    Progress,
    RealServerLoad,
    Recovery,
    Result,
    Scenario,
    Session,
    TimelineEvent,
    director_only,
)

if TYPE_CHECKING:  # the backend calls this module (SimBackend.what_if): no import back at run time
    from lbcore.sim.backend import Connection, SimBackend

#: Where a fwmark service's traffic goes when no FirewallMark rule names a destination: a host
#: "on the internet" (a documentation address) on the web's port.
FWMARK_DESTINATION = ipaddress.ip_address("192.0.2.80")
FWMARK_DESTINATION6 = ipaddress.ip_address("2001:db8:80::80")
DEFAULT_PORT = 80


@attrs.frozen
class _Target:
    """Where one service's sessions are sent, and how."""

    service: VirtualService
    vip: IPAddress
    vport: int
    protocol: Protocol
    mark: int | None


@attrs.frozen
class _Session:
    start: float
    end: float
    target: int
    client: IPAddress


@attrs.frozen
class _Run:
    endpoints: tuple[str | None, ...]  # per session: the rip:rport that took it, or None
    persistence_hits: int
    events: tuple[TimelineEvent, ...]


def _name(key: ServiceKey) -> str:
    return str(key)


def _target(deployment: Deployment, service: VirtualService) -> _Target:
    if service.fwmark is None:
        assert service.protocol is not None and service.address is not None
        return _Target(service, service.address, service.port or DEFAULT_PORT, service.protocol, None)
    # The rule that marks this service's packets says what they look like: its first protocol
    # (tcp first), port and destination. The mark is given, as mangle PREROUTING would set it.
    rules = [r for r in deployment.rules if isinstance(r, FirewallMark) and r.mark == service.fwmark]
    protocol, port = Protocol.TCP, DEFAULT_PORT
    vip: IPAddress = FWMARK_DESTINATION6 if service.family == 6 else FWMARK_DESTINATION
    if rules:
        rule = rules[0]
        carried = sorted(p for p in rule.protocols if p in (Protocol.TCP, Protocol.UDP))
        if rule.protocols and carried:
            protocol = Protocol.TCP if Protocol.TCP in carried else carried[0]
        port = rule.ports[0] if rule.ports else DEFAULT_PORT
        if rule.destinations and service.family == 4:
            net = rule.destinations[0]
            vip = net.network_address if net.num_addresses == 1 else net.network_address + 1
    return _Target(service, vip, port, protocol, service.fwmark)


def _matches(wanted: str, key: ServiceKey) -> bool:
    text = str(key)
    return wanted.strip() in (text, text.split(" ", 1)[-1])


class Engine:
    """Plays one scenario against one deployment; :meth:`result` runs it.

    Args:
        make_sim: a new simulator on the clock given (same kernel release as the caller's).
        deployment: the deployment.
        scenario: the scenario.
        progress: called with (sessions played, sessions to play over every run).

    Raises:
        InvalidField: the scenario does not fit the deployment.
        Unsupported: the deployment asks for something the simulator refuses.
    """

    def __init__(self, make_sim: Callable[[VirtualClock], SimBackend], deployment: Deployment,
                 scenario: Scenario, progress: Progress | None = None) -> None:
        self.make_sim = make_sim
        self.scenario = scenario
        self.progress = progress
        deployment, left_out = director_only(deployment)
        notes = list(left_out)
        self.deployment = deployment
        self.checked: list[CheckedService] = deployment.checked()
        services = deployment.virtual_services()
        if scenario.service is not None:
            chosen = [s for s in services if _matches(scenario.service, s.key)]
            if not chosen:
                raise InvalidField("Scenario", "service", scenario.service,
                                   f"is not a service of the deployment ({', '.join(str(s.key) for s in services)})")
            services = chosen
        carried = [s for s in services if s.protocol in (None, Protocol.TCP, Protocol.UDP)]
        for s in services:
            if s not in carried:
                notes.append(f"{s.key}: no traffic (the simulator carries tcp and udp traffic only)")
        if not carried:
            raise InvalidField("Scenario", "service", scenario.service or "(every service)",
                               "leaves no tcp or udp service to send traffic to")
        self.targets = [_target(deployment, s) for s in carried]
        addresses = {rs.address for s in deployment.virtual_services() for rs in s.real_servers}
        for failure in scenario.failures:
            if failure.address not in addresses:
                raise InvalidField("Scenario", "failures", str(failure), "is not a real server of the deployment")
        self.failures = sorted(scenario.failures, key=lambda f: (f.at, str(f.address)))
        self.sessions = self._sessions()
        self.notes = notes

    def _sessions(self) -> list[_Session]:
        s = self.scenario
        families = {t.vip.version for t in self.targets}
        clients: dict[int, tuple[IPAddress, ...]] = {
            4: tuple(clients_in(s.network, s.clients)) if 4 in families else (),
            6: tuple(clients_in(s.network6, s.clients)) if 6 in families else ()}
        rate = s.rate / len(self.targets)
        sessions: list[_Session] = []
        for i, t in enumerate(self.targets):
            # Each service's arrivals have a seed of their own, derived from the scenario's.
            workload = Workload(vip=t.vip, vport=t.vport, clients=clients[t.vip.version], rate=rate,
                                mean_session=s.mean_session, duration=s.duration, protocol=t.protocol,
                                seed=s.seed * 1_000_003 + i)
            sessions.extend(_Session(begin, end, i, client) for begin, end, client in workload.sessions())
        sessions.sort(key=lambda x: (x.start, x.target))
        return sessions

    # -- one run -----------------------------------------------------------------------------------

    def _play(self, failures: Sequence[Failure], recoveries: Sequence[Recovery], done: int, total: int) -> _Run:
        deployed = SimDeployment(self.deployment, self.make_sim(VirtualClock()), seed=self.scenario.seed)
        for failure in failures:
            deployed.fail(failure.address, at=failure.at)
        for recovery in recoveries:
            deployed.recover(recovery.address, at=recovery.at)
        pending: list[tuple[float, int, Connection]] = []  # session ends, by time
        endpoints: list[str | None] = []
        templates: set[object] = set()  # every template seen: the same object again is a hit
        hits = 0
        step = max(1, len(self.sessions) // 100)
        for n, session in enumerate(self.sessions):
            while pending and pending[0][0] <= session.start:
                when, _, conn = heapq.heappop(pending)
                deployed.run_until(when)
                deployed.close(conn)
            deployed.run_until(session.start)
            t = self.targets[session.target]
            opened = deployed.connect(session.client, t.vip, t.vport, protocol=t.protocol, mark=t.mark)
            if opened is None:
                endpoints.append(None)
            else:
                endpoints.append(opened.endpoint)
                template = opened.template
                if template is not None:
                    if template in templates:
                        hits += 1
                    templates.add(template)
                heapq.heappush(pending, (session.end, n, opened))
            if self.progress is not None and (n + 1) % step == 0:
                self.progress(done + n + 1, total)
        while pending:
            when, _, conn = heapq.heappop(pending)
            deployed.run_until(when)
            deployed.close(conn)
        # Every failure and recovery happens, and the checks get the time to find the last ones.
        last = max([f.at for f in failures] + [r.at for r in recoveries] + [deployed.now()])
        deployed.run_until(max(deployed.now(), last + (self._detection_bound() if deployed.monitor else 0.0)))
        events = list(deployed.changes)
        events += [TimelineEvent(e.time, e.kind.value, None if e.address is None else str(e.address), _name(e.service))
                   for e in deployed.health_events]
        events.sort(key=lambda e: e.time)  # stable: at one time, the failure before what it caused
        if self.progress is not None:
            self.progress(done + len(self.sessions), total)
        return _Run(tuple(endpoints), hits, tuple(events))

    def _detection_bound(self) -> float:
        """The longest any check takes to find a failure: fall checks, each with its retries."""
        bound = 0.0
        for c in self.checked:
            p = c.policy
            per_check = max(p.interval, (p.retry + 1) * p.timeout + p.retry * p.delay_before_retry)
            bound = max(bound, p.fall * per_check + p.timeout + p.jitter)
        return bound

    # -- the scenario ------------------------------------------------------------------------------

    def _recoveries(self, failures: Sequence[Failure]) -> list[Recovery]:
        return [r for r in self.scenario.recoveries
                if any(f.address == r.address and f.at < r.at for f in failures)]

    def result(self) -> Result:
        """Run the scenario (once per failure, and once without any) and say what it did.

        Raises:
            LBError: the deployment does not apply to the simulator.
        """
        total = len(self.sessions) * (len(self.failures) + 1)
        runs: list[_Run] = []
        for k in range(len(self.failures) + 1):
            included = self.failures[:k]
            runs.append(self._play(included, self._recoveries(included), k * len(self.sessions), total))
        final = runs[-1]
        return Result(
            scenario=self.scenario,
            sessions=len(self.sessions),
            opened=sum(1 for e in final.endpoints if e is not None),
            refused=sum(1 for e in final.endpoints if e is None),
            persistence_hits=final.persistence_hits,
            real_servers=self._loads(final),
            failures=tuple(self._outcome(k, runs) for k in range(len(self.failures))),
            events=final.events,
            times=self._times(),
            load=self._load_over_time(final),
            notes=tuple(self.notes),
            log=tuple(Session(s.start, s.end, _name(self.targets[s.target].service.key), s.client, e)
                      for s, e in zip(self.sessions, final.endpoints)),
        )

    def _loads(self, run: _Run) -> tuple[RealServerLoad, ...]:
        counts: Counter[tuple[int, str]] = Counter()
        for session, endpoint in zip(self.sessions, run.endpoints):
            if endpoint is not None:
                counts[(session.target, endpoint)] += 1
        loads: list[RealServerLoad] = []
        for i, t in enumerate(self.targets):
            mine = {ep: n for (target, ep), n in counts.items() if target == i}
            configured = [format_endpoint(rs.address, rs.port or t.vport) for rs in t.service.real_servers]
            ordered = configured + sorted(ep for ep in mine if ep not in configured)  # a fallback server
            total = sum(mine.values())
            loads.extend(RealServerLoad(_name(t.service.key), ep, mine.get(ep, 0),
                                        mine.get(ep, 0) / total if total else 0.0) for ep in ordered)
        return tuple(loads)

    def _outcome(self, k: int, runs: list[_Run]) -> FailureOutcome:
        failure = self.failures[k]
        before, after = runs[k].endpoints, runs[k + 1].endpoints
        moved = sum(1 for a, b in zip(before, after) if a != b)
        address = format_endpoint(failure.address, 0).rpartition(":")[0]
        back = min((r.at for r in self.scenario.recoveries if r.address == failure.address and r.at > failure.at),
                   default=float("inf"))
        final = runs[-1].endpoints
        on_it = [(s, e) for s, e in zip(self.sessions, final) if e is not None and e.rpartition(":")[0] == address]
        open_at = sum(1 for s, _ in on_it if s.start < failure.at < s.end)
        sent = sum(1 for s, _ in on_it if failure.at <= s.start < back)
        handling: dict[str, str] = {}
        checked = {c.key: c for c in self.checked}
        for svc in self.deployment.virtual_services():
            if not any(rs.address == failure.address for rs in svc.real_servers):
                continue
            c = checked.get(svc.key)
            if c is None:
                handling[_name(svc.key)] = "removed at once (no health check)"
            else:
                p = c.policy
                handling[_name(svc.key)] = (f"{c.action.value} after {p.fall} failed check{'s' * (p.fall > 1)}, "
                                            f"every {p.interval:g} s (timeout {p.timeout:g} s)")
        downs = [e.time for e in runs[k + 1].events
                 if e.address == str(failure.address) and e.kind in ("down", "removed") and e.time >= failure.at]
        detected = None
        if len(downs) >= len(handling):
            detected = max(sorted(downs)[:len(handling)])
        return FailureOutcome(failure, handling, detected, moved, open_at, sent)

    def _times(self) -> tuple[float, ...]:
        n = self.scenario.samples
        return tuple(self.scenario.duration * i / (n - 1) for i in range(n))

    def _down(self) -> dict[str, list[tuple[float, float]]]:
        """Per real server address (as endpoints print it): when it was failed, [at, recovered)."""
        down: dict[str, list[tuple[float, float]]] = {}
        for f in self.failures:
            back = min((r.at for r in self.scenario.recoveries if r.address == f.address and r.at > f.at),
                       default=float("inf"))
            down.setdefault(format_endpoint(f.address, 0).rpartition(":")[0], []).append((f.at, back))
        return down

    def _load_over_time(self, run: _Run) -> dict[tuple[str, str], tuple[int, ...]]:
        # A real server that fails loses its open sessions then, and those sent to it while it is
        # failed never open: the load shows what the servers really carry.
        times = self._times()
        series: dict[tuple[str, str], list[int]] = {
            (load.service, load.endpoint): [0] * len(times) for load in self._loads(run)}
        width = times[1] - times[0]
        down = self._down()
        for session, endpoint in zip(self.sessions, run.endpoints):
            if endpoint is None:
                continue
            end = session.end
            for at, back in down.get(endpoint.rpartition(":")[0], ()):
                if at <= session.start < back:
                    end = session.start
                elif session.start < at:
                    end = min(end, at)
            values = series[(_name(self.targets[session.target].service.key), endpoint)]
            first = int(-(-session.start // width))  # the first sample at or after the start
            for i in range(first, len(times)):
                if times[i] >= end:
                    break
                values[i] += 1
        return {key: tuple(values) for key, values in series.items()}
