"""What-if runs (lbcore.whatif, played by the simulator): checked against the simulator's own answers."""

from __future__ import annotations

from collections import defaultdict

import attrs
import pytest

from lbcore import (
    Balancer,
    Deployment,
    FirewallMark,
    InvalidField,
    Persistence,
    RealServer,
    Sysctls,
    Unsupported,
    VirtualService,
)
from lbcore.health import CheckedService, Policy, TCPCheck
from lbcore.sim import SimBackend
from lbcore.whatif import Failure, Recovery, Result, Scenario, WhatIf, parse_time, simulate

VIP = "192.0.2.40"
GW = ("198.51.100.41", "198.51.100.42", "198.51.100.43")
POLICY = Policy(interval=2, timeout=1, fall=3)


def gateways(scheduler: str = "sh", **options: object) -> VirtualService:
    flags = ["sh-fallback"] if scheduler == "sh" else []
    return VirtualService(protocol="tcp", address=VIP, port=80, scheduler=scheduler, flags=flags,
                          real_servers=[RealServer(gw, 80) for gw in GW], **options)  # type: ignore[arg-type]


def checked(service: VirtualService, **options: object) -> CheckedService:
    return CheckedService(service=service, check=TCPCheck(), policy=POLICY, **options)  # type: ignore[arg-type]


def per_client(result: Result) -> dict[str, list[tuple[float, str | None]]]:
    sessions: dict[str, list[tuple[float, str | None]]] = defaultdict(list)
    for s in result.log:
        sessions[str(s.client)].append((s.start, s.endpoint))
    return sessions


def test_the_same_seed_gives_the_same_run_and_another_seed_another() -> None:
    d = Deployment(services=[checked(gateways("wlc", persistence=Persistence(300)))])
    scenario = Scenario(clients=50, rate=20, duration=60, seed=3, failures=[Failure.parse("198.51.100.42@20s")])
    first, again = simulate(d, scenario), simulate(d, scenario)
    assert first.to_json() == again.to_json() and first.log == again.log
    other = simulate(d, attrs.evolve(scenario, seed=4))
    assert other.log != first.log


def test_a_checked_failure_is_found_by_the_policy_and_moves_exactly_the_failed_servers_sessions() -> None:
    """sh with its fallback, quiesced by the health check: compare with SimBackend.which."""
    service = gateways()
    d = Deployment(services=[checked(service)])
    scenario = Scenario(clients=200, network="203.0.113.0/24", rate=40, mean_session=5, duration=60,
                        failures=[Failure(address=GW[1], at=20.0)])
    healthy = simulate(d, attrs.evolve(scenario, failures=()))
    failed = simulate(d, scenario)
    (outcome,) = failed.failures
    # Found down by the checks: fall checks after the failure, the last one timing out.
    assert outcome.detected is not None
    assert 20.0 + (POLICY.fall - 1) * POLICY.interval <= outcome.detected <= 20.0 + POLICY.fall * POLICY.interval \
        + POLICY.timeout
    assert [(e.kind, e.address) for e in failed.events if e.service] == [("down", GW[1])]
    assert outcome.handling == {f"-t {VIP}:80": "quiesce after 3 failed checks, every 2 s (timeout 1 s)"}
    # Where a quiesced gateway 2's clients go now: the simulator's own answer, asked directly.
    sim = SimBackend()
    Balancer(sim).apply([attrs.evolve(service, real_servers=[
        attrs.evolve(rs, weight=0) if str(rs.address) == GW[1] else rs for rs in service.real_servers])])
    moved = 0
    for before, after in zip(healthy.log, failed.log):
        assert before.client == after.client and before.start == after.start
        if after.start < 20.0 or before.endpoint != f"{GW[1]}:80":
            assert after.endpoint == before.endpoint  # persistence-free sh: nobody else moves
        elif after.start >= outcome.detected:
            assert after.endpoint == sim.which(after.client, VIP, 80) != before.endpoint
        moved += after.endpoint != before.endpoint
    assert outcome.moved == moved > 0
    # Between the failure and its detection, gateway 2 still took new sessions: lost ones.
    lost = [s for s in failed.log if 20.0 <= s.start < outcome.detected and s.endpoint == f"{GW[1]}:80"]
    assert outcome.sent_to_failed == len(lost) > 0
    assert outcome.open_at_failure == sum(1 for s in failed.log if s.start < 20.0 < s.end
                                          and s.endpoint == f"{GW[1]}:80") > 0


def test_persistence_keeps_clients_on_their_real_server_and_moves_only_the_failed_ones() -> None:
    """wlc with persistence, no check: the failed server is removed; templates decide the rest."""
    d = Deployment(services=[gateways("wlc", persistence=Persistence(3600))])
    result = simulate(d, Scenario(clients=40, rate=10, mean_session=10, duration=90,
                                  failures=[Failure(address=GW[0], at=30.0)]))
    (outcome,) = result.failures
    assert outcome.detected == 30.0 and outcome.handling == {f"-t {VIP}:80": "removed at once (no health check)"}
    clients = per_client(result)
    # One template per client, and a second for each client of the failed server that came back
    # after it failed: every other session is a persistence hit.
    moved_clients = [c for c, sessions in clients.items()
                     if sessions[0][1] == f"{GW[0]}:80" and any(t >= 30.0 for t, _ in sessions)]
    assert moved_clients
    assert result.persistence_hits == result.opened - len(clients) - len(moved_clients)
    for client, sessions in clients.items():
        first = sessions[0][1]
        before = {ep for t, ep in sessions if t < 30.0}
        after = {ep for t, ep in sessions if t >= 30.0}
        assert len(before) <= 1 and len(after) <= 1, client  # one real server per client at a time
        if first != f"{GW[0]}:80":
            assert after <= {first}, client  # persistence held: the failure did not move it
        else:
            assert f"{GW[0]}:80" not in after, client  # moved, and kept its new server after
    assert outcome.sent_to_failed == 0 and result.refused == 0


def test_a_quiesced_real_server_keeps_its_persistent_clients_unless_quiescent_templates_expire() -> None:
    """The kernel's rule: a template to a weight-0 real server still holds (expire_quiescent_template=0)."""
    service = gateways("wlc", persistence=Persistence(3600))
    scenario = Scenario(clients=40, rate=10, mean_session=10, duration=90, failures=[Failure(address=GW[0], at=30.0)])
    held = simulate(Deployment(services=[checked(service)]), scenario)
    expired = simulate(Deployment(services=[checked(service)], sysctls=Sysctls(expire_quiescent_template=True)),
                       scenario)
    (h,), (e,) = held.failures, expired.failures
    assert h.detected == e.detected
    window = [s for s in held.log if 30.0 <= s.start < (h.detected or 0) and s.endpoint == f"{GW[0]}:80"]
    assert h.sent_to_failed > len(window)  # its clients keep coming after it was quiesced
    assert e.sent_to_failed == len([s for s in expired.log if 30.0 <= s.start < (e.detected or 0)
                                    and s.endpoint == f"{GW[0]}:80"])


def test_a_recovery_brings_the_real_server_back() -> None:
    d = Deployment(services=[gateways("rr")])
    result = simulate(d, Scenario(clients=20, rate=10, duration=60, failures=[Failure.parse(f"{GW[2]}@10s")],
                                  recoveries=[Recovery.parse(f"{GW[2]}@40s")]))
    on_it = [s.start for s in result.log if s.endpoint == f"{GW[2]}:80"]
    assert on_it and not [t for t in on_it if 10.0 <= t < 40.0] and max(on_it) >= 40.0
    assert [e.kind for e in result.events] == ["fail", "removed", "recover", "restored"]
    series = result.load[(f"-t {VIP}:80", f"{GW[2]}:80")]
    during = [v for t, v in zip(result.times, series) if 10.0 <= t < 40.0]
    assert during and set(during) == {0}  # a failed server loses its sessions and carries none


def test_every_service_gets_traffic_fwmark_ones_with_their_mark() -> None:
    web = gateways("wlc")
    proxy = VirtualService(fwmark=1, scheduler="rr", real_servers=[RealServer(gw, 0, forward="dr") for gw in GW])
    d = Deployment(services=[web, proxy], rules=[FirewallMark(1, "tcp", ports=(80, 443))])
    result = simulate(d, Scenario(clients=30, rate=20, duration=30))
    services = {s.service for s in result.log}
    assert services == {f"-t {VIP}:80", "-f 1"} and result.refused == 0
    fw = [r for r in result.real_servers if r.service == "-f 1"]
    assert [r.endpoint for r in fw] == [f"{gw}:80" for gw in GW] and all(r.sessions > 0 for r in fw)
    assert sum(r.sessions for r in result.real_servers) == result.opened == result.sessions
    only = simulate(d, Scenario(clients=30, rate=20, duration=30, service="-f 1"))
    assert {s.service for s in only.log} == {"-f 1"}


def test_the_simulator_is_a_what_if_backend_and_is_left_as_it_was() -> None:
    sim = SimBackend()
    assert isinstance(sim, WhatIf)
    result = sim.what_if(Deployment(services=[gateways()]), Scenario(clients=5, rate=5, duration=5))
    assert result.opened > 0 and len(sim.read()) == 0


@pytest.mark.parametrize(("text", "field"), [("198.51.100.42", "value"), ("198.51.100.42@soon", "time"),
                                             ("gateway@30s", "address"), ("1.2.3.4@30s@2", "value")])
def test_a_bad_failure_text_is_an_invalid_field_naming_the_option(text: str, field: str) -> None:
    with pytest.raises(InvalidField) as caught:
        Failure.parse(text)
    assert (caught.value.owner, caught.value.field) == ("--fail", field)


def test_times_take_units() -> None:
    assert [parse_time(t) for t in ("30", "30s", "1.5m", "500ms", "2h")] == [30, 30, 90, 0.5, 7200]


def test_a_scenario_that_does_not_fit_the_deployment_is_refused_by_name() -> None:
    d = Deployment(services=[gateways()])
    with pytest.raises(InvalidField, match="is not a real server of the deployment"):
        simulate(d, Scenario(failures=[Failure(address="192.0.2.99", at=1.0)]))
    with pytest.raises(InvalidField, match="follows no failure"):
        Scenario(recoveries=[Recovery(address=GW[0], at=1.0)])
    with pytest.raises(InvalidField, match="is not a service of the deployment"):
        simulate(d, Scenario(service="-t 192.0.2.1:80"))


def test_a_backend_that_cannot_run_what_ifs_is_refused_with_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    import lbcore.whatif

    class Plain:
        name = "plain"

        def close(self) -> None:
            pass

    monkeypatch.setattr(lbcore.whatif, "open_backend", lambda name, **options: Plain())
    with pytest.raises(Unsupported, match="what-if"):
        simulate(Deployment(services=[gateways()]), Scenario(), backend="plain")


def test_a_draining_service_drains_and_the_progress_reaches_the_total() -> None:
    d = Deployment(services=[checked(gateways("wlc"), action="drain", drain_timeout=5.0)])
    seen: list[tuple[int, int]] = []
    scenario = Scenario(clients=20, rate=10, mean_session=3, duration=40, failures=[Failure(address=GW[0], at=10.0)])
    result = simulate(d, scenario, progress=lambda done, total: seen.append((done, total)))
    (outcome,) = result.failures
    assert outcome.handling == {f"-t {VIP}:80": "drain after 3 failed checks, every 2 s (timeout 1 s)"}
    kinds = [e.kind for e in result.events if e.address == GW[0]]
    assert kinds[:3] == ["fail", "down", "drained"]
    assert seen[-1] == (2 * result.sessions, 2 * result.sessions)  # two runs: without and with the failure
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_udp_and_ipv6_services_get_traffic_too() -> None:
    dns = VirtualService(protocol="udp", address="192.0.2.53", port=53, scheduler="rr",
                         real_servers=[RealServer("198.51.100.53", 53), RealServer("198.51.100.54", 53)])
    web6 = VirtualService(protocol="tcp", address="2001:db8::80", port=80, scheduler="rr",
                          real_servers=[RealServer("2001:db8:1::1", 80), RealServer("2001:db8:1::2", 80)])
    result = simulate(Deployment(services=[dns, web6]), Scenario(clients=10, rate=10, duration=20))
    assert {r.endpoint: r.sessions > 0 for r in result.real_servers} == {
        "198.51.100.53:53": True, "198.51.100.54:53": True, "[2001:db8:1::1]:80": True, "[2001:db8:1::2]:80": True}
    assert {str(s.client) for s in result.log if s.service == "-t [2001:db8::80]:80"} <= {
        f"2001:db8:c::{i:x}" for i in range(1, 11)}


def test_parts_the_simulation_leaves_out_are_named_in_the_notes() -> None:
    from lbcore import FloatingIP

    d = Deployment(services=[gateways()], floating_ips=[FloatingIP(address="192.0.2.40/24", interface="eth0")])
    result = simulate(d, Scenario(clients=5, rate=5, duration=5))
    assert result.notes == ("not simulated (no scheduling decision on the director depends on them): floating_ips",)
