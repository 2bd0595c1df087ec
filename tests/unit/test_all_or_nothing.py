"""Regression tests of issue 11's findings on the simulator, the ops and the plans: each is named
after its finding."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from lbcore import Balancer, InvalidField, Persistence, RealServer, Table, VirtualService
from lbcore.errors import BackendError
from lbcore.model import ServiceKey
from lbcore.ops import (
    AddRealServer,
    AddRule,
    AddService,
    DeleteRealServer,
    DeleteRule,
    DeleteService,
    EditRealServer,
    EditService,
    SetSysctls,
    SetTimeouts,
)
from lbcore.plan import plan
from lbcore.rules import FirewallMark, PolicyRoute
from lbcore.sim import SimBackend
from lbcore.testing.conformance import VIP, web

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def plane(sim: SimBackend) -> tuple[object, ...]:
    """The simulator as a client and ipvsadm see it: the table, the listing, and where connections go."""
    return (sim.read(), sim.snapshot(),
            [sim.which(f"203.0.113.{n}", VIP, 80) for n in range(1, 6)])


def test_execute_with_bad_payload_leaves_sim_unchanged() -> None:
    # Once: DeleteService went through, then SetTimeouts(900) raised AttributeError in the data
    # plane; read() still showed the service, a retry "converged" with [] and apply([]) raised KeyError.
    sim = SimBackend()
    lb = Balancer(sim)
    lb.apply([web()])
    assert sim.connect("203.0.113.1", VIP, 80) is not None
    before = plane(sim)
    with pytest.raises(InvalidField) as refused:
        lb.execute([DeleteService(web().key), SetTimeouts(900)])  # type: ignore[arg-type]
    assert (refused.value.owner, refused.value.field, refused.value.value) == ("SetTimeouts", "timeouts", 900)
    assert plane(sim) == before
    assert lb.apply([web()]) == []
    assert lb.apply([]) == [DeleteService(web().key)]
    assert sim.director.services == {}


KEY = web().key
RS = RealServer("198.51.100.1", 80, forward="nat")


@pytest.mark.parametrize(("make", "field", "value"), [
    (lambda: DeleteService("tcp 192.0.2.10:80"), "key", "tcp 192.0.2.10:80"),  # type: ignore[arg-type]
    (lambda: DeleteService(web()), "key", web()),  # type: ignore[arg-type]
    (lambda: AddRealServer(KEY, "198.51.100.1:80"), "real_server", "198.51.100.1:80"),  # type: ignore[arg-type]
    (lambda: AddRealServer(None, RS), "key", None),  # type: ignore[arg-type]
    (lambda: EditRealServer(KEY, 5), "real_server", 5),  # type: ignore[arg-type]
    (lambda: DeleteRealServer(KEY, "not an address", 80), "address", "not an address"),
    (lambda: DeleteRealServer(KEY, "198.51.100.1", 70000), "port", 70000),
    (lambda: DeleteRealServer(KEY, "198.51.100.1", "80"), "port", "80"),  # type: ignore[arg-type]
    (lambda: SetTimeouts(900), "timeouts", 900),  # type: ignore[arg-type]
    (lambda: SetTimeouts(None), "timeouts", None),  # type: ignore[arg-type]
    (lambda: SetSysctls({"expire_nodest_conn": 1}), "sysctls", {"expire_nodest_conn": 1}),  # type: ignore[arg-type]
    (lambda: AddService("web"), "service", "web"),  # type: ignore[arg-type]
    (lambda: EditService(web()), "service", str(web().key)),
    (lambda: AddRule("mark 1"), "rule", "mark 1"),  # type: ignore[arg-type]
    (lambda: DeleteRule(None), "rule", None),  # type: ignore[arg-type]
])
def test_every_op_payload_is_validated_when_the_op_is_made(make: Any, field: str, value: object) -> None:
    with pytest.raises(InvalidField) as refused:
        make()
    assert refused.value.field == field
    assert refused.value.value == value


def test_an_op_with_a_missing_field_is_refused_naming_it() -> None:
    with pytest.raises(InvalidField) as refused:
        DeleteRealServer(KEY, "198.51.100.1")  # type: ignore[call-arg]
    assert refused.value.field == "port"


def test_delete_real_server_takes_the_address_as_text() -> None:
    assert DeleteRealServer(KEY, "198.51.100.1", 80).address == ipaddress.ip_address("198.51.100.1")


@pytest.mark.parametrize("value", [None, 5, object(), "web", b"web", 1.5])
def test_table_none_is_refused(value: object) -> None:
    # Table(None), Table(5) and Table(object()) were an empty table: lb.apply(Table(None))
    # deleted every service.
    with pytest.raises(InvalidField) as refused:
        Table(value)  # type: ignore[arg-type]
    assert (refused.value.owner, refused.value.field) == ("Table", "services")


def test_table_of_things_that_are_not_services_or_rules_is_refused() -> None:
    with pytest.raises(InvalidField):
        Table([web(), 5])  # type: ignore[list-item]
    with pytest.raises(InvalidField):
        Table([], rules=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidField):
        Table([], rules=["mark 1"])  # type: ignore[list-item]
    with pytest.raises(InvalidField):
        Table([], timeouts=900)  # type: ignore[arg-type]
    with pytest.raises(InvalidField):
        Table([], sysctls={})  # type: ignore[arg-type]


def test_a_table_takes_a_mapping_or_a_list_of_services() -> None:
    assert Table({web().key: web()}) == Table([web()]) == Table(s for s in [web()])
    assert Table([]).services == {}


@pytest.mark.parametrize("desired", [None, 5, "web"])
def test_balancer_apply_none_is_refused_and_deletes_nothing(desired: object) -> None:
    lb = Balancer(SimBackend())
    lb.apply([web()])
    with pytest.raises(InvalidField) as refused:
        lb.apply(desired)  # type: ignore[arg-type]
    assert (refused.value.owner, refused.value.field) == ("Balancer", "desired")
    with pytest.raises(InvalidField):
        lb.plan(desired)  # type: ignore[arg-type]
    assert list(lb.read()) == [web()]


@pytest.mark.parametrize("ops", [None, 5, [5], ["add_service"]])
def test_balancer_execute_of_something_not_ops_is_refused(ops: object) -> None:
    lb = Balancer(SimBackend())
    with pytest.raises(InvalidField):
        lb.execute(ops)  # type: ignore[arg-type]
    with pytest.raises(InvalidField):
        lb.check(ops)  # type: ignore[arg-type]


class Boom(Exception):
    pass


@pytest.mark.parametrize("dataplane", ["ipvs", "iptables"])
def test_a_fault_inside_the_sim_data_plane_leaves_it_exactly_as_before(
        dataplane: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = SimBackend(dataplane=dataplane, weighted="random" if dataplane == "iptables" else None)
    lb = Balancer(sim)
    lb.apply([web(), VirtualService(protocol="tcp", address=VIP, port=443, scheduler="rr",
                                    real_servers=[RealServer("198.51.100.2", 443, forward="nat")])])
    conns = [sim.connect(f"203.0.113.{n}", VIP, 80) for n in range(1, 4)]
    before = (sim.read(), [sim.which(f"203.0.113.{n}", VIP, port) for n in range(1, 9) for port in (80, 443)],
              sim.snapshot() if dataplane == "ipvs" else None)
    name = "_carry_out" if dataplane == "ipvs" else "load"
    real = getattr(type(sim._plane), name)

    def fail_after(self: object, *args: object) -> None:
        real(self, *args)  # the change takes effect, and then the plane fails
        raise Boom("a bug in the simulator")

    monkeypatch.setattr(type(sim._plane), name, fail_after)
    with pytest.raises(BackendError) as failed:
        lb.apply([web(persistence=Persistence(60), real_servers=[RealServer("198.51.100.3", 80, forward="nat")])])
    assert isinstance(failed.value.__cause__, Boom)
    monkeypatch.undo()
    after = (sim.read(), [sim.which(f"203.0.113.{n}", VIP, port) for n in range(1, 9) for port in (80, 443)],
             sim.snapshot() if dataplane == "ipvs" else None)
    assert after == before
    for conn in conns:  # the connections a caller holds still close
        assert conn is not None
        sim.disconnect(conn)
    assert lb.apply([web()])  # and the next apply converges in one pass
    assert lb.apply([web()]) == []


# -- plans whose every step is valid ------------------------------------------------------------------


def _apply_each_step(current: Table, desired: Table) -> None:
    """Apply the plan one op at a time on a simulator: every intermediate state must be valid."""
    sim = SimBackend()
    lb = Balancer(sim)
    lb.apply(current)
    for op in plan(sim.read(), desired):
        lb.execute([op])
    assert lb.apply(desired) == []


def test_policy_route_table_swap() -> None:
    # Swapping the tables of two marks failed on every attempt: InvalidField "PolicyRoute.table:
    # 106 is the table of ...", an intermediate state with two routes in one table.
    before = Table([], rules=[PolicyRoute(3, 106), PolicyRoute(4, 107)])
    after = Table([], rules=[PolicyRoute(3, 107), PolicyRoute(4, 106)])
    _apply_each_step(before, after)
    assert plan(before, after) == [DeleteRule(PolicyRoute(3, 106)), DeleteRule(PolicyRoute(4, 107)),
                                   AddRule(PolicyRoute(3, 107)), AddRule(PolicyRoute(4, 106))]


def test_policy_route_table_move_between_marks() -> None:
    _apply_each_step(Table([], rules=[PolicyRoute(3, 106)]), Table([], rules=[PolicyRoute(4, 106)]))
    _apply_each_step(Table([], rules=[PolicyRoute(3, 106), PolicyRoute(4, 107), PolicyRoute(5, 108)]),
                     Table([], rules=[PolicyRoute(3, 107), PolicyRoute(4, 108), PolicyRoute(5, 106)]))


def test_mark_moves_and_real_servers_moved_between_services_plan_valid_steps() -> None:
    a = VirtualService(protocol="tcp", address=VIP, port=80, scheduler="rr",
                       real_servers=[RealServer("198.51.100.1", 80, forward="nat")])
    b = VirtualService(protocol="tcp", address=VIP, port=443, scheduler="rr",
                       real_servers=[RealServer("198.51.100.2", 443, forward="nat")])
    moved_a = VirtualService(protocol="tcp", address=VIP, port=80, scheduler="rr",
                             real_servers=[RealServer("198.51.100.2", 80, forward="nat")])
    moved_b = VirtualService(protocol="tcp", address=VIP, port=443, scheduler="rr",
                             real_servers=[RealServer("198.51.100.1", 443, forward="nat")])
    m1 = VirtualService(fwmark=1, scheduler="rr", real_servers=[RealServer("198.51.100.1", 0)])
    m2 = VirtualService(fwmark=2, scheduler="rr", real_servers=[RealServer("198.51.100.1", 0)])
    _apply_each_step(Table([a, b, m1], rules=[FirewallMark(1, "tcp", ports=[80]), PolicyRoute(1, 100)]),
                     Table([moved_a, moved_b, m2], rules=[FirewallMark(2, "tcp", ports=[80]), PolicyRoute(2, 100)]))


def test_plan_of_rules_is_the_same_whatever_the_order_of_the_mappings() -> None:
    rules = [FirewallMark(m, "tcp", ports=[80]) for m in (5, 1, 3)] + [PolicyRoute(m, 100 + m) for m in (9, 7, 8)]
    have = Table([], rules=rules[:3])
    for order in (rules, list(reversed(rules)), rules[3:] + rules[:3]):
        assert plan(have, Table([], rules=order)) == plan(have, Table([], rules=sorted(order, key=str)))


SCRIPT = textwrap.dedent("""
    from lbcore import Balancer, Table
    from lbcore.rules import PolicyRoute
    from lbcore.sim import SimBackend

    for dataplane in ("ipvs", "iptables"):
        lb = Balancer(SimBackend(dataplane=dataplane))
        # Built from sets, as a deployment file's rules may be: their order follows the hash seed.
        lb.apply(Table([], rules={PolicyRoute(3, 106), PolicyRoute(5, 108)}))
        lb.apply(Table([], rules={PolicyRoute(4, 106), PolicyRoute(5, 108)}))  # table 106: mark 3 -> 4
        lb.apply(Table([], rules={PolicyRoute(4, 108), PolicyRoute(5, 106)}))  # a swap
        assert lb.apply(Table([], rules={PolicyRoute(4, 108), PolicyRoute(5, 106)})) == []
        print(dataplane, [str(op) for op in lb.plan(Table([], rules={PolicyRoute(3, 106), PolicyRoute(4, 107)}))])
""")


def test_policy_route_table_move_is_hash_order_independent() -> None:
    # Moving a table from mark 3 to mark 4 succeeded or failed depending on PYTHONHASHSEED.
    outputs = set()
    for seed in ("0", "1", "2", "3"):
        done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                              cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed,
                                             "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "backends")])},
                              check=False)
        assert done.returncode == 0, f"PYTHONHASHSEED={seed}: {done.stderr}"
        outputs.add(done.stdout)
    assert len(outputs) == 1, outputs  # the same steps, in the same order, under every seed


def test_service_key_is_not_confused_with_a_service() -> None:
    assert isinstance(web().key, ServiceKey)
    assert DeleteService(web().key).key == web().key



PROPERTY = textwrap.dedent("""
    from hypothesis import given, settings

    from lbcore import Balancer
    from lbcore.sim import SimBackend
    from lbcore.testing.conformance import _tables, fitted

    for backend in (SimBackend(), SimBackend(dataplane="iptables", weighted="random")):
        lb = Balancer(backend)

        @settings(max_examples=30, deadline=None, derandomize=True, database=None)
        @given(_tables(), _tables())
        def check(a, b):
            a, b = fitted(a, backend), fitted(b, backend)
            lb.apply(a)
            lb.apply(b)
            assert lb.apply(b) == [], (a, b)

        check()
""")


def test_random_state_pairs_follow_each_other_in_one_apply_under_several_hash_seeds() -> None:
    # The conformance suite's random states (policy routes moving and swapping tables among them)
    # on both simulated data planes: whatever the seed, apply(A), apply(B) succeed and apply(B)
    # again plans nothing.
    for seed in ("1", "2", "3"):
        done = subprocess.run([sys.executable, "-c", PROPERTY], capture_output=True, text=True, timeout=300,
                              cwd=ROOT, check=False, env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": ROOT})
        assert done.returncode == 0, f"PYTHONHASHSEED={seed}: {done.stderr[-3000:]}"


@pytest.mark.parametrize("dataplane", ["ipvs", "iptables"])
def test_a_fault_at_any_op_of_random_plans_leaves_the_sim_as_it_was(dataplane: str) -> None:
    # The finding: a fault injected at op k of N half-applied 316 of 356 cases. Here every op k of
    # the plans between random valid tables, on both data planes, with connections open.
    from hypothesis import given, settings

    from lbcore.testing.conformance import _tables, fitted

    @settings(max_examples=15, deadline=None, derandomize=True, database=None)
    @given(_tables(), _tables())
    def check(a: Table, b: Table) -> None:
        probe = SimBackend(dataplane=dataplane, weighted="random" if dataplane == "iptables" else None)
        a, b = fitted(a, probe), fitted(b, probe)
        k = 0
        while True:
            sim = SimBackend(dataplane=dataplane, weighted="random" if dataplane == "iptables" else None)
            lb = Balancer(sim)
            lb.apply(a)
            for n in range(1, 4):
                sim.connect(f"203.0.113.{n}", VIP, 80)

            def view(sim: SimBackend = sim) -> object:
                return (sim.read(), sim.snapshot() if dataplane == "ipvs" else None,
                        [sim.which(f"203.0.113.{n}", VIP, port, mark=mark)
                         for n in range(1, 6) for port in (80, 443) for mark in (None, 1)])

            before = view()
            plane = sim._plane
            name = "_carry_out" if dataplane == "ipvs" else "load"
            real = getattr(plane, name)
            calls = [0]

            def faulty(*args: Any, real: Any = real, calls: list[int] = calls, k: int = k) -> Any:
                calls[0] += 1
                if dataplane == "ipvs" and calls[0] - 1 == k:
                    raise Boom(f"op {k}")
                result = real(*args)
                if dataplane == "iptables" and calls[0] - 1 == k:
                    raise Boom("after the load")
                return result

            setattr(plane, name, faulty)
            try:
                lb.apply(b)
                fired = False
            except BackendError as exc:
                assert isinstance(exc.__cause__, Boom)
                fired = True
            delattr(plane, name)
            if not fired:
                return
            assert view() == before, f"a fault at op {k} changed the simulator"
            lb.apply(b)
            assert lb.apply(b) == []
            k += 1

    check()
