"""The monitor on a virtual clock: a simulated fleet, the simulator backend, exact times."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from lbcore import Balancer, Capability, EditRealServer, InvalidField, Op, RealServer, VirtualClock, VirtualService
from lbcore.health import (
    Action,
    CheckedService,
    EventKind,
    FixedCheck,
    HealthState,
    Monitor,
    Policy,
    SimProber,
    TCPCheck,
)
from lbcore.sim import Connection, SimBackend

VIP = "192.0.2.10"
RS = ("198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4")
SORRY = "198.51.100.99"
CLIENTS = [f"203.0.113.{i}" for i in range(1, 41)]


def service(weights: tuple[int, ...] = (1, 1, 1), protocol: str = "tcp", vip: str = VIP) -> VirtualService:
    return VirtualService(protocol=protocol, address=vip, port=80, scheduler="wlc",
                          real_servers=[RealServer(a, 80, weight=w) for a, w in zip(RS, weights)])


class Rig:
    """A monitor on a SimProber and a SimBackend that share one virtual clock."""

    def __init__(self, *configs: CheckedService, seed: int = 0) -> None:
        self.clock = VirtualClock()
        self.prober = SimProber(self.clock)
        self.fleet = self.prober.fleet
        self.sim = SimBackend(clock=self.clock)
        self.monitor = Monitor(Balancer(self.sim), configs, self.prober, seed=seed)
        self.monitor.start()

    def run_until(self, when: float) -> None:
        self.prober.run_until(when)

    def weights(self, vs: VirtualService | None = None) -> dict[str, int]:
        held = self.sim.read().get((vs or service()).key)
        assert held is not None
        return {str(rs.address): rs.weight for rs in held.real_servers}

    def kinds(self) -> list[tuple[str, str | None]]:
        return [(e.kind.value, None if e.address is None else str(e.address)) for e in self.monitor.events]


POLICY = Policy(interval=1.0, timeout=0.5, fall=3, rise=2)


def checked(**options: object) -> CheckedService:
    fields: dict[str, object] = {"service": service(), "check": TCPCheck(), "policy": POLICY}
    fields.update(options)
    return CheckedService(**fields)  # type: ignore[arg-type]


def draining(**options: object) -> tuple[VirtualService, Rig, list[Connection]]:
    """Two real servers that drain on failure; eight clients connected, some of them to RS[0],
    which fails at 0.5 s. Returns the service, the rig, and RS[0]'s connections."""
    vs = service((1, 1))
    rig = Rig(checked(service=vs, action=Action.DRAIN, **options))
    conns = [rig.sim.connect(c, VIP, 80) for c in CLIENTS[:8]]
    mine = [c for c in conns if c is not None and str(c.real_server) == RS[0]]
    assert mine
    rig.fleet.fail(RS[0], at=0.5)
    return vs, rig, mine


def test_time_to_weight_zero_is_interval_times_fall_plus_timeout() -> None:
    rig = Rig(checked())
    rig.fleet.fail(RS[0], at=10.25)  # just after the check that starts at 10 passed
    rig.run_until(13.49)
    assert rig.weights()[RS[0]] == 1
    rig.run_until(14.0)
    assert rig.weights()[RS[0]] == 0
    down = [e for e in rig.monitor.events if e.kind is EventKind.DOWN]
    assert [(str(e.address), e.time) for e in down] == [(RS[0], 10.0 + 1.0 * 3 + 0.5)]


def test_server_comes_back_after_rise_passed_checks_with_its_weight() -> None:
    rig = Rig(checked(service=service((5, 1, 1))))
    rig.fleet.fail(RS[0], at=0.5)
    rig.fleet.recover(RS[0], at=10.5)  # checks at 11 and 12 pass: up when the one at 12 answers
    rig.run_until(11.5)
    assert rig.weights()[RS[0]] == 0
    rig.run_until(13.0)
    assert rig.weights()[RS[0]] == 5
    assert [(e.kind, e.time) for e in rig.monitor.events] == [(EventKind.DOWN, 3.5), (EventKind.UP, 12.0)]


@pytest.mark.parametrize("initial", ["up", "down"])
def test_server_alternating_at_every_check_with_fall_3_rise_2_changes_no_state(initial: str) -> None:
    rig = Rig(checked(policy=Policy(interval=1.0, timeout=0.5, fall=3, rise=2, initial=initial)))
    for k in range(0, 60, 2):
        rig.fleet.fail(RS[0], at=k + 0.5)  # the check at k+1 fails ...
        rig.fleet.recover(RS[0], at=k + 1.5)  # ... the one at k+2 passes
    rig.run_until(60.0)
    assert [e for e in rig.monitor.events if e.address is not None and str(e.address) == RS[0]] == []
    assert rig.monitor.state(service(), RS[0], 80) is HealthState(initial)
    assert rig.weights()[RS[0]] == (1 if initial == "up" else 0)


def test_initial_down_servers_come_up_after_rise_checks() -> None:
    rig = Rig(checked(policy=Policy(interval=1.0, timeout=0.5, fall=3, rise=2, initial="down")))
    assert rig.weights() == {RS[0]: 0, RS[1]: 0, RS[2]: 0}
    rig.run_until(1.5)  # checks at 0 and 1 passed
    assert rig.weights() == {RS[0]: 1, RS[1]: 1, RS[2]: 1}
    assert [k for k, _ in rig.kinds()] == ["quorum_down", "up", "quorum_up", "up", "up"]


def test_fallback_server_is_added_when_every_real_server_is_down_and_removed_when_one_returns() -> None:
    vs = service((1, 1))
    rig = Rig(checked(service=vs, fallback=RealServer(SORRY, 80), action="remove"))
    rig.fleet.fail(RS[0], at=0.5)
    rig.fleet.fail(RS[1], at=2.5)
    rig.run_until(8.0)
    assert rig.weights(vs) == {SORRY: 1}
    rig.fleet.recover(RS[1], at=8.5)
    rig.run_until(12.0)
    assert rig.weights(vs) == {RS[1]: 1}
    assert rig.kinds() == [("down", RS[0]), ("down", RS[1]), ("quorum_down", None), ("fallback_on", SORRY),
                           ("up", RS[1]), ("quorum_up", None), ("fallback_off", SORRY)]


def test_quorum_is_lost_below_quorum_minus_hysteresis_and_regained_at_quorum_plus_hysteresis() -> None:
    vs = service((1, 1, 1, 1))
    rig = Rig(checked(service=vs, quorum=3, hysteresis=1, policy=Policy(interval=1.0, timeout=0.5)))
    quorum = []
    for i, t in enumerate((0.5, 2.5, 4.5)):  # up weight 3, 2 (still >= 3 - 1), then 1: lost
        rig.fleet.fail(RS[i], at=t)
    for i, t in zip((2, 1, 0), (6.5, 8.5, 10.5)):  # 2, 3 (still < 3 + 1), then 4: regained
        rig.fleet.recover(RS[i], at=t)
    for t in range(1, 13):
        rig.run_until(t + 0.75)
        quorum.append([e.kind.value for e in rig.monitor.events if e.kind.value.startswith("quorum")])
    assert quorum[3] == [] and quorum[4] == ["quorum_down"]  # the third server went down at 5.5
    assert quorum[9] == ["quorum_down"] and quorum[10] == ["quorum_down", "quorum_up"]


def test_drain_keeps_the_server_at_weight_zero_until_its_connections_are_gone_then_removes_it() -> None:
    vs, rig, mine = draining(drain_timeout=1000.0)
    rig.run_until(20.0)
    assert rig.weights(vs)[RS[0]] == 0  # down at 3.5, draining: live connections continue
    assert rig.sim.which("203.0.113.200", VIP, 80) == f"{RS[1]}:80"
    for c in mine:
        rig.sim.disconnect(c)
    rig.run_until(100.0)
    assert RS[0] in rig.weights(vs)  # closed connections still count until they expire (inactive)
    rig.run_until(200.0)
    assert RS[0] not in rig.weights(vs)
    drained = [e for e in rig.monitor.events if e.kind is EventKind.DRAINED]
    assert len(drained) == 1 and drained[0].detail == "no connections left"
    assert 20.0 + 60 <= drained[0].time <= 20.0 + 121.0


def test_drain_removes_the_server_when_the_drain_timeout_passes() -> None:
    vs, rig, _ = draining(drain_timeout=30.0, drain_poll=5.0)
    rig.run_until(33.49)
    assert rig.weights(vs)[RS[0]] == 0
    rig.run_until(34.0)
    assert RS[0] not in rig.weights(vs)
    drained = [e for e in rig.monitor.events if e.kind is EventKind.DRAINED]
    assert [e.time for e in drained] == [3.5 + 30.0] and "timeout" in drained[0].detail


def test_drain_of_a_udp_service_removes_at_once() -> None:
    vs = service((1, 1), protocol="udp")
    rig = Rig(checked(service=vs, action="drain"))
    rig.sim.connect(CLIENTS[0], VIP, 80, protocol="udp")
    rig.fleet.fail(RS[0], at=0.5)
    rig.fleet.fail(RS[1], at=0.5)
    rig.run_until(4.0)
    assert rig.weights(vs) == {}
    assert [k for k, _ in rig.kinds()] == ["down", "drained", "down", "quorum_down", "drained"]


def test_stop_keeps_the_backend_and_start_resumes_checks_and_drains() -> None:
    vs, rig, _ = draining(drain_timeout=30.0)
    rig.run_until(5.0)
    rig.monitor.stop()
    attempts = len(rig.prober.attempts)
    rig.run_until(50.0)
    assert len(rig.prober.attempts) == attempts and rig.weights(vs)[RS[0]] == 0
    rig.monitor.start()
    rig.run_until(51.0)
    assert rig.weights(vs) == {RS[1]: 1}  # the drain timeout passed while stopped
    assert [k for k, _ in rig.kinds()] == ["down", "drained"]


def test_server_that_returns_while_draining_gets_its_weight_back() -> None:
    vs = service((3, 1))
    rig = Rig(checked(service=vs, action="drain"))
    conns = [rig.sim.connect(c, VIP, 80) for c in CLIENTS[:4]]
    assert any(c is not None and str(c.real_server) == RS[0] for c in conns)
    rig.fleet.fail(RS[0], at=0.5)
    rig.fleet.recover(RS[0], at=5.5)
    rig.run_until(10.0)
    assert rig.weights(vs) == {RS[0]: 3, RS[1]: 1}
    assert [k for k, _ in rig.kinds()] == ["down", "up"]


def test_remove_action_deletes_then_adds_back() -> None:
    rig = Rig(checked(action="remove"))
    rig.fleet.fail(RS[2], at=0.5)
    rig.run_until(4.0)
    assert rig.weights() == {RS[0]: 1, RS[1]: 1}
    rig.fleet.recover(RS[2], at=4.5)
    rig.run_until(7.0)
    assert rig.weights() == {RS[0]: 1, RS[1]: 1, RS[2]: 1}


def test_identical_checks_of_two_services_run_once() -> None:
    web, alt = service(), service(vip="192.0.2.11")
    rig = Rig(checked(service=web), checked(service=alt))
    assert len(rig.monitor.probes) == 3
    rig.fleet.fail(RS[0], at=0.5)
    rig.run_until(9.9)
    assert len(rig.prober.attempts) == 3 * 10  # checks at 0, 1, ..., 9: three targets each
    assert [(e.kind.value, e.service) for e in rig.monitor.events] == [("down", web.key), ("down", alt.key)]
    assert rig.weights(web)[RS[0]] == rig.weights(alt)[RS[0]] == 0


def test_retry_tries_a_failed_attempt_again_before_the_check_fails() -> None:
    rig = Rig(checked(policy=Policy(interval=1.0, timeout=0.5, fall=1, retry=2, delay_before_retry=0.25)))
    rig.fleet.fail(RS[0], at=10.5)
    rig.run_until(20.0)
    # attempts at 11 (fails at 11.5), 11.75 (12.25), 12.5 (13.0): down at 13.0
    assert [e.time for e in rig.monitor.events] == [13.0]
    times = [t for t, a, _ in rig.prober.attempts if str(a) == RS[0] and 11 <= t <= 13.0]
    assert times == [11.0, 11.75, 12.5, 13.0]


def test_jitter_spreads_first_checks_and_is_seeded() -> None:
    policy = Policy(interval=1.0, timeout=0.5, jitter=0.8)
    firsts = []
    for _ in range(2):
        rig = Rig(checked(policy=policy), seed=7)
        rig.run_until(0.9)
        firsts.append(sorted(t for t, _, _ in rig.prober.attempts))
    assert firsts[0] == firsts[1]
    assert len(set(firsts[0])) == 3 and all(0 <= t <= 0.8 for t in firsts[0])


def test_reload_keeps_the_state_of_unchanged_checks() -> None:
    rig = Rig(checked())
    rig.fleet.fail(RS[0], at=0.5)
    rig.run_until(5.0)
    assert rig.monitor.state(service(), RS[0], 80) is HealthState.DOWN
    bigger = service((1, 4, 1, 1))  # RS[1] weighs 4 now, RS[3] is new
    rig.monitor.reload([checked(service=bigger)])
    assert rig.monitor.state(bigger, RS[0], 80) is HealthState.DOWN
    assert rig.weights() == {RS[0]: 0, RS[1]: 4, RS[2]: 1, RS[3]: 1}
    rig.run_until(9.0)
    assert [k for k, _ in rig.kinds()] == ["down"]  # nothing restarted: no spurious up or down
    # A changed definition is a new check: it starts from the policy's initial state.
    rig.monitor.reload([checked(service=bigger, check=TCPCheck(port=8080))])
    assert rig.monitor.state(bigger, RS[0], 80) is HealthState.UP
    assert len(rig.monitor.probes) == 4


def test_reload_deletes_services_no_longer_configured() -> None:
    web, alt = service(), service(vip="192.0.2.11")
    rig = Rig(checked(service=web), checked(service=alt))
    rig.run_until(2.0)
    rig.monitor.reload([checked(service=web)])
    assert [s.key for s in rig.sim.read()] == [web.key]
    assert len(rig.monitor.probes) == 3


def test_callbacks_see_every_event_and_result() -> None:
    rig = Rig(checked())
    seen: list[str] = []
    results: list[bool] = []
    rig.monitor.subscribe(lambda e: seen.append(e.kind.value))
    rig.monitor.on_result(lambda r: results.append(r.ok))
    rig.fleet.fail(RS[0], at=0.5)
    rig.run_until(3.9)
    assert seen == ["down"]
    assert results.count(False) == 3 and len(results) == 12


def test_latency_beyond_the_timeout_fails_the_check() -> None:
    rig = Rig(checked(policy=Policy(interval=1.0, timeout=0.5, fall=2)))
    rig.fleet.set_latency(RS[1], 0.6, at=3.5)
    rig.run_until(6.0)
    assert [(e.kind.value, str(e.address), e.time) for e in rig.monitor.events] == [("down", RS[1], 5.5)]


def test_two_services_with_one_identity_are_refused() -> None:
    with pytest.raises(InvalidField) as info:
        Rig(checked(), checked())
    assert (info.value.owner, info.value.field) == ("Monitor", "services")


def test_fixed_checks_keep_a_server_in_or_out_whatever_the_fleet_does() -> None:
    rig = Rig(checked(check=FixedCheck(state="down"), policy=Policy(interval=1.0, timeout=0.5, fall=2)),
              checked(service=service(vip="192.0.2.11"), check=FixedCheck()))
    rig.fleet.fail(RS[0], at=0.0)
    rig.run_until(5.0)
    assert rig.weights() == {RS[0]: 0, RS[1]: 0, RS[2]: 0}
    assert rig.weights(service(vip="192.0.2.11")) == {RS[0]: 1, RS[1]: 1, RS[2]: 1}
    assert rig.prober.attempts == []


def test_a_real_server_can_have_its_own_check() -> None:
    rig = Rig(checked(checks={f"{RS[1]}:80": TCPCheck(port=8443)}))
    rig.fleet.fail(RS[1], 8443, at=0.5)  # only the port its own check asks
    rig.run_until(4.0)
    assert rig.weights() == {RS[0]: 1, RS[1]: 0, RS[2]: 1}
    assert sorted({p for _, _, p in rig.prober.attempts}) == [80, 8443]
    with pytest.raises(InvalidField) as info:
        checked(checks={"198.51.100.200:80": TCPCheck()})
    assert (info.value.owner, info.value.field) == ("CheckedService", "checks")


class RecordingSim(SimBackend):
    """The simulator, recording every batch of ops it is asked to apply."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock=clock)
        self.applied: list[list[Op]] = []

    def apply(self, ops: Sequence[Op]) -> None:
        self.applied.append(list(ops))
        super().apply(ops)


def test_changes_go_through_the_balancer_as_planned_ops() -> None:
    prober = SimProber()
    sim = RecordingSim(prober.clock)
    monitor = Monitor(Balancer(sim), [checked()], prober)
    monitor.start()
    prober.fleet.fail(RS[1], at=0.5)
    prober.run_until(4.0)
    assert sim.applied[-1] == [EditRealServer(service().key, RealServer(RS[1], 80, weight=0))]


def test_a_change_the_backend_refuses_is_an_error_event_and_checking_goes_on() -> None:
    prober = SimProber()
    sim = SimBackend(clock=prober.clock)
    monitor = Monitor(Balancer(sim), [checked()], prober)
    monitor.start()
    sim.capabilities = sim.capabilities - {Capability.QUIESCE}  # as a backend without weight 0
    prober.fleet.fail(RS[1], at=0.5)
    prober.fleet.recover(RS[1], at=4.5)
    prober.run_until(7.0)
    assert [e.kind.value for e in monitor.events] == ["down", "error", "up"]
    assert "quiesce" in monitor.events[1].detail


def test_reload_that_drops_a_draining_server_ends_its_drain() -> None:
    vs, rig, _ = draining(drain_timeout=100.0)
    rig.run_until(5.0)
    assert rig.weights(vs)[RS[0]] == 0
    smaller = VirtualService(protocol="tcp", address=VIP, port=80, scheduler="wlc",
                             real_servers=[RealServer(RS[1], 80)])
    rig.monitor.reload([checked(service=smaller, action="drain", drain_timeout=100.0)])
    rig.run_until(200.0)
    assert rig.weights(vs) == {RS[1]: 1}
    assert [k for k, _ in rig.kinds()] == ["down"]  # no drained event: the server left the configuration


def test_fleet_script_the_latest_change_for_the_address_or_its_port_wins() -> None:
    fleet = SimProber().fleet
    fleet.fail(RS[0], at=1.0)
    fleet.recover(RS[0], 80, at=2.0)
    fleet.fail(RS[0], 80, at=3.0, refuse=True)
    fleet.recover(RS[0], at=4.0)
    assert [fleet.condition(RS[0], 80, t).up for t in (0.5, 1.0, 2.0, 3.5, 4.0)] == [True, False, True, False, True]
    assert [fleet.condition(RS[0], 443, t).up for t in (0.5, 1.0, 2.0, 3.5, 4.0)] == [True, False, False, False, True]
    assert fleet.condition(RS[0], 80, 3.5).refuse
    with pytest.raises(InvalidField):
        fleet.fail("not-an-address", at=1.0)
