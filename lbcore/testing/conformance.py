"""One conformance suite for every backend: the same ops give the same table and the same errors.

Use it from a test module of one line per backend::

    from lbcore.testing.conformance import BackendConformance, fixture

    class TestSim(BackendConformance):
        backend = fixture("sim")

Tests of a feature are guarded by capability (:func:`requires`): for a backend that lacks it,
the suite asserts the :class:`~lbcore.errors.Unsupported` refusal instead, and that nothing changed.

Two tests need more of a backend's test class than the backend:

- **A fault at every step.** The class gives a ``fault`` fixture: ``fault(backend, k)`` is a
  context manager inside which the backend's next apply fails at its step ``k`` (0-based: an op
  reaching the data plane, a request, a commit) with a :class:`~lbcore.errors.BackendError`, and
  which tells (``.fired``) whether it did. The suite tries k = 0, 1, ... until an apply has fewer
  steps than k, and after each fault checks that the backend holds what it held
  (:meth:`BackendConformance.view`) and that one apply then converges.
- **Random states.** For random valid tables A and B (services, and the rules and timeouts the
  backend has), ``apply(A)``, ``apply(B)`` succeed and ``apply(B)`` again plans nothing
  (hypothesis; ``property_examples`` examples).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol, TypeVar

import attrs
import pytest

from lbcore.backend import RULE_CAPABILITIES, Backend, Capability, ConnectionCounts, Listings, needs
from lbcore.balancer import Balancer
from lbcore.enums import Scheduler
from lbcore.errors import (
    BackendError,
    InvalidField,
    RealServerExists,
    RealServerNotFound,
    RuleExists,
    RuleNotFound,
    ServiceExists,
    ServiceNotFound,
    Unsupported,
)
from lbcore.model import Persistence, RealServer, Timeouts, Tunnel, VirtualService
from lbcore.ops import (
    AddRealServer,
    AddRule,
    AddService,
    DeleteRealServer,
    DeleteRule,
    DeleteService,
    EditRealServer,
    Op,
)
from lbcore.registry import open_backend
from lbcore.rules import AutoNat, FirewallMark, LoopbackVIP, PolicyRoute, Redirect, Rule
from lbcore.table import Table

F = TypeVar("F", bound=Callable[..., Any])

VIP = "192.0.2.10"
VIP6 = "2001:db8::10"
RIPS = ("198.51.100.1", "198.51.100.2", "198.51.100.3")


def fixture(name: str, **options: Any) -> Any:
    """A pytest fixture that opens backend ``name`` for each test and closes it after."""

    @pytest.fixture
    def backend(self: object) -> Iterator[Backend]:
        opened = open_backend(name, **options)
        try:
            yield opened
        finally:
            opened.close()

    return backend


def requires(*capabilities: Capability) -> Callable[[F], F]:
    """Run the test where the backend has ``capabilities``; elsewhere expect Unsupported."""

    def decorate(test: F) -> F:
        @functools.wraps(test)
        def run(self: BackendConformance, backend: Backend) -> None:
            missing = set(capabilities) - backend.capabilities
            if not missing:
                test(self, backend)
                return
            before = backend.read()
            with pytest.raises(Unsupported) as refused:
                test(self, backend)
            assert refused.value.capability in missing
            assert backend.read() == before

        return run  # type: ignore[return-value]

    return decorate


def web(scheduler: str = "rr", **kwargs: Any) -> VirtualService:
    """A TCP service on port 80 with three NAT real servers (rr: every backend has it)."""
    kwargs.setdefault("real_servers", [RealServer(rip, 80, forward="nat") for rip in RIPS])
    return VirtualService(protocol="tcp", address=VIP, port=80, scheduler=scheduler, **kwargs)


class Injected(Protocol):
    """What a ``fault`` fixture's context manager gives: whether the fault fired."""

    fired: bool


# ``fault(backend, k)``: a context in which the backend's next apply fails at its step ``k``.
Fault = Callable[[Backend, int], AbstractContextManager[Injected]]


def _fault_states() -> tuple[Table, Table]:
    """A start and a goal whose plan has many ops of every kind: services and real servers added,
    edited and deleted, timeouts, marks and policy routes (the backend takes what it has)."""
    start = Table([web("wlc"), VirtualService(protocol="udp", address=VIP, port=53, scheduler="rr",
                                              real_servers=[RealServer(RIPS[1], 53, forward="nat")])],
                  timeouts=Timeouts(tcp=600, tcpfin=30, udp=60),
                  rules=[FirewallMark(1, "tcp", ports=(80,)), PolicyRoute(3, 106), PolicyRoute(4, 107)])
    goal = Table([web("rr", real_servers=[RealServer(RIPS[0], 80, forward="nat", weight=4),
                                          RealServer(RIPS[2], 80, forward="nat"),
                                          RealServer("198.51.100.9", 8080, forward="nat")]),
                  VirtualService(protocol="tcp", address=VIP, port=443, scheduler="rr",
                                 real_servers=[RealServer(RIPS[1], 443, forward="nat")])],
                  timeouts=Timeouts(tcp=900, tcpfin=120, udp=300),
                  rules=[FirewallMark(1, "tcp", ports=(80, 443)), PolicyRoute(3, 107), PolicyRoute(4, 106)])
    return start, goal


def fitted(table: Table, backend: Backend) -> Table:
    """``table`` without what ``backend`` cannot express (rules, timeouts, scheduler features)."""
    caps = backend.capabilities
    rules = [r for r in (table.rules or {}).values() if needs(AddRule(r)) <= caps]
    return Table([s for s in table if not _service_needs_missing(s, caps)],
                 timeouts=table.timeouts if Capability.TIMEOUTS in caps else None,
                 rules=rules if caps & RULE_CAPABILITIES else None)


def _service_needs_missing(svc: VirtualService, caps: frozenset[Capability]) -> bool:
    ops: list[Op] = [AddService(svc.settings), *(AddRealServer(svc.key, rs) for rs in svc.real_servers)]
    return any(not needs(op) <= caps for op in ops)


class BackendConformance:
    """The contract every backend keeps. Subclasses set ``backend = fixture(name)``, and give a
    ``fault`` fixture (see the module's docstring)."""

    #: Examples of the random-states test; a class on a slow backend may lower it.
    property_examples: ClassVar[int] = 30

    #: Whether a failed apply puts back the order of services and real servers too. The simulator
    #: restores its state exactly; an undo journal (a kernel backend's, a composite's) re-adds a
    #: deleted real server at the head of the kernel's list, so the order is left out there.
    exact_order: ClassVar[bool] = False

    def view(self, backend: Backend) -> object:
        """What a failed apply must leave as it was: the table, and the data plane's listing.

        A class may add more of its data plane (the simulator: where new connections go).
        """
        table = backend.read()
        snapshot = None
        if isinstance(backend, Listings):
            try:
                snapshot = backend.snapshot()
            except InvalidField:  # a data plane with nothing to list (the sim's DNAT balancer)
                snapshot = None
        if self.exact_order:
            return table, snapshot
        services = sorted((str(s.key), sorted(map(repr, s.real_servers)), repr(s.settings)) for s in table)
        listed = None if snapshot is None else (
            sorted((repr(s.service.settings), sorted(map(repr, s.real_servers)), s.stats)
                   for s in snapshot.services), snapshot.connections, snapshot.timeouts)
        return services, attrs.evolve(table, services={}), listed

    def test_a_fault_at_any_step_leaves_the_backend_as_it_was(self, backend: Backend, fault: Fault) -> None:
        lb = Balancer(backend)
        start, goal = (fitted(t, backend) for t in _fault_states())
        steps = 0
        while True:
            lb.apply(start)
            before = self.view(backend)
            with fault(backend, steps) as injected:
                try:
                    lb.apply(goal)
                except BackendError:
                    assert injected.fired, f"a BackendError at step {steps} that was not injected"
            if not injected.fired:
                break
            assert self.view(backend) == before, f"a fault at step {steps} changed the backend"
            assert lb.apply(goal), f"after a fault at step {steps}, nothing was left to apply"
            assert lb.apply(goal) == [], f"after a fault at step {steps}, one apply did not converge"
            steps += 1
            assert steps < 500, "the fault never stopped firing"
        assert steps >= 1, "the apply has no step a fault could hit"
        assert lb.plan(goal) == []

    def test_any_valid_state_follows_any_other_in_one_apply(self, backend: Backend) -> None:
        from hypothesis import HealthCheck, given, settings

        lb = Balancer(backend)
        timeouts = backend.read().timeouts

        @settings(max_examples=self.property_examples, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
        @given(_tables(), _tables())
        def check(a: Table, b: Table) -> None:
            a, b = fitted(a, backend), fitted(b, backend)
            lb.apply(a)
            lb.apply(b)
            assert lb.apply(b) == [], (a, b)

        try:
            check()
        finally:  # the global timeouts as they were (other tests in the same kernel expect them)
            lb.apply(Table([], timeouts=timeouts, rules=[] if backend.capabilities & RULE_CAPABILITIES else None))


    def test_a_new_backend_owns_no_services(self, backend: Backend) -> None:
        assert len(backend.read()) == 0

    def test_add_service_reads_back_the_same_service(self, backend: Backend) -> None:
        Balancer(backend).add_service(web())
        assert list(backend.read()) == [web()]

    def test_add_existing_service_raises_service_exists(self, backend: Backend) -> None:
        lb = Balancer(backend)
        lb.add_service(web())
        before = backend.read()
        with pytest.raises(ServiceExists):
            lb.add_service(web(scheduler="wrr"))
        assert backend.read() == before

    def test_real_server_for_a_missing_service_raises_service_not_found(self, backend: Backend) -> None:
        with pytest.raises(ServiceNotFound):
            Balancer(backend).add_real_server(web().key, RealServer(RIPS[0], 80, forward="nat"))
        assert len(backend.read()) == 0

    def test_adding_an_existing_real_server_raises_real_server_exists(self, backend: Backend) -> None:
        lb = Balancer(backend)
        lb.add_service(web())
        with pytest.raises(RealServerExists):
            lb.add_real_server(web().key, RealServer(RIPS[0], 80, forward="nat", weight=5))
        assert list(backend.read()) == [web()]

    def test_editing_a_missing_real_server_raises_real_server_not_found(self, backend: Backend) -> None:
        lb = Balancer(backend)
        lb.add_service(web())
        with pytest.raises(RealServerNotFound):
            lb.edit_real_server(web().key, RealServer("198.51.100.99", 80, forward="nat"))
        with pytest.raises(RealServerNotFound):
            lb.delete_real_server(web().key, ipaddress.ip_address("198.51.100.99"), 80)

    def test_deleting_a_missing_service_raises_service_not_found(self, backend: Backend) -> None:
        with pytest.raises(ServiceNotFound):
            Balancer(backend).delete_service(web().key)

    def test_a_failing_op_leaves_the_whole_batch_unapplied(self, backend: Backend) -> None:
        lb = Balancer(backend)
        lb.add_service(web())
        before = backend.read()
        other = VirtualService(protocol="tcp", address=VIP, port=443, scheduler="rr")
        with pytest.raises(ServiceExists):
            lb.execute([AddService(other), AddService(web().settings)])
        assert backend.read() == before

    def _held(self, backend: Backend) -> tuple[Table, dict[Any, Any] | None]:
        """What a stale op must leave as it is: the table, and the data plane's counts."""
        table = backend.read()
        if not isinstance(backend, ConnectionCounts):
            return table, None
        return table, {key: backend.connection_counts(key) for key in table.services}

    def test_a_stale_op_reaches_no_backend(self, backend: Backend) -> None:
        # Ops planned against an earlier read, applied after another writer changed the state:
        # the backend's own check (prepare) refuses them with the typed error, and nothing changes.
        lb = Balancer(backend)
        lb.add_service(web())
        other = VirtualService(protocol="tcp", address=VIP, port=443, scheduler="rr")
        stale = lb.plan([web(), other])  # plans AddService(other) on a table without it
        lb.add_service(other)  # ...which another writer adds first
        held = self._held(backend)
        with pytest.raises(ServiceExists):
            backend.apply(stale)
        assert self._held(backend) == held
        removal = lb.plan([web()])  # DeleteService(other), planned while it exists
        lb.delete_service(other)  # ...and removed by another writer first
        held = self._held(backend)
        new_rs = RealServer("198.51.100.4", 80, forward="nat")
        with pytest.raises(ServiceNotFound):  # a fitting op first: it must not take effect either
            backend.apply([AddRealServer(web().key, new_rs), *removal])
        assert self._held(backend) == held
        with pytest.raises(RealServerNotFound):
            backend.apply([DeleteRealServer(web().key, ipaddress.ip_address(RIPS[0]), 80),
                           EditRealServer(web().key, new_rs)])
        assert self._held(backend) == held

    def test_dr_real_server_on_another_port_is_refused(self, backend: Backend) -> None:
        lb = Balancer(backend)
        lb.add_service(web(real_servers=[]))
        dr = AddRealServer(web().key, RealServer(RIPS[0], 8080, forward="dr"))
        if Capability.FORWARD_DR in backend.capabilities:
            with pytest.raises(InvalidField) as refused:
                lb.execute([dr])
            assert refused.value.field == "port" and refused.value.value == 8080
        else:
            with pytest.raises(Unsupported) as unsupported:
                lb.execute([dr])
            assert unsupported.value.capability is Capability.FORWARD_DR
        assert list(backend.read()) == [web(real_servers=[])]

    def test_applying_a_desired_state_twice_plans_nothing_the_second_time(self, backend: Backend) -> None:
        lb = Balancer(backend)
        dns = VirtualService(
            protocol="udp", address=VIP, port=53, scheduler="rr", real_servers=[RealServer(RIPS[1], 53, forward="nat")]
        )
        desired = [web(), dns]
        assert lb.apply(desired)
        assert lb.plan(desired) == []
        assert lb.apply(desired) == []

    def test_changing_one_weight_is_one_edit(self, backend: Backend) -> None:
        lb = Balancer(backend)
        lb.apply([web()])
        changed = web(
            real_servers=[RealServer(rip, 80, forward="nat", weight=5 if rip == RIPS[1] else 1) for rip in RIPS]
        )
        ops = lb.apply([changed])
        assert ops == [EditRealServer(web().key, RealServer(RIPS[1], 80, forward="nat", weight=5))]
        assert list(backend.read()) == [changed]

    def test_edit_service_keeps_its_real_servers(self, backend: Backend) -> None:
        lb = Balancer(backend)
        lb.add_service(web())
        lb.edit_service(web(scheduler="wrr"))
        assert list(backend.read()) == [web(scheduler="wrr")]

    def test_delete_service_removes_its_real_servers(self, backend: Backend) -> None:
        lb = Balancer(backend)
        lb.add_service(web())
        lb.delete_service(web())
        lb.add_service(web(real_servers=[]))
        assert list(backend.read()) == [web(real_servers=[])]

    def test_desired_state_without_a_service_deletes_it(self, backend: Backend) -> None:
        lb = Balancer(backend)
        lb.apply([web()])
        assert lb.apply([]) == [DeleteService(web().key)]
        assert len(backend.read()) == 0

    @pytest.mark.parametrize("scheduler", [s.value for s in Scheduler])
    def test_every_scheduler_reads_back(self, backend: Backend, scheduler: str) -> None:
        @requires(Capability.for_scheduler(Scheduler(scheduler)))
        def check(self: BackendConformance, backend: Backend) -> None:
            Balancer(backend).add_service(web(scheduler))
            assert [s.scheduler.value for s in backend.read()] == [scheduler]

        check(self, backend)

    @requires(Capability.PERSISTENCE, Capability.PERSISTENCE_NETMASK)
    def test_persistence_with_netmask_reads_back(self, backend: Backend) -> None:
        svc = web(persistence=Persistence(timeout=300, netmask="255.255.255.0"))
        Balancer(backend).add_service(svc)
        assert list(backend.read()) == [svc]

    @requires(Capability.FWMARK, Capability.FORWARD_DR)
    def test_fwmark_service_reads_back(self, backend: Backend) -> None:
        svc = VirtualService(fwmark=1, scheduler="rr", real_servers=[RealServer(RIPS[0], 0)])
        Balancer(backend).add_service(svc)
        assert list(backend.read()) == [svc]

    @requires(Capability.IPV6, Capability.FORWARD_NAT)
    def test_ipv6_service_reads_back(self, backend: Backend) -> None:
        svc = VirtualService(
            protocol="tcp",
            address=VIP6,
            port=443,
            scheduler="sh",
            flags=["sh-port"],
            real_servers=[RealServer("2001:db8::1:1", 8443, forward="nat")],
        )
        Balancer(backend).add_service(svc)
        assert list(backend.read()) == [svc]

    @requires(Capability.FORWARD_TUNNEL)
    def test_tunnel_real_server_reads_back(self, backend: Backend) -> None:
        svc = web(
            real_servers=[
                RealServer(RIPS[0], 80, forward="tunnel", tunnel=Tunnel(type="gue", port=6080, checksum="csum"))
            ]
        )
        Balancer(backend).add_service(svc)
        assert list(backend.read()) == [svc]

    @requires(Capability.THRESHOLDS)
    def test_thresholds_read_back(self, backend: Backend) -> None:
        svc = web(real_servers=[RealServer(RIPS[0], 80, forward="nat", u_threshold=100, l_threshold=50)])
        Balancer(backend).add_service(svc)
        assert list(backend.read()) == [svc]

    @requires(Capability.MARK_RULES, Capability.FWMARK)
    def test_a_fwmark_service_and_its_marks_apply_and_read_back_together(self, backend: Backend) -> None:
        svc = VirtualService(fwmark=1, scheduler="rr", real_servers=[RealServer(RIPS[0], 0, forward="nat")])
        marks = FirewallMark(1, "tcp", ports=(80, 443), destinations=[VIP])
        lb = Balancer(backend)
        lb.apply(Table([svc], rules=[marks]))
        assert backend.read().rules == {marks.key: marks}
        assert list(backend.read()) == [svc]
        assert lb.apply(Table([], rules=[])) == [DeleteRule(marks), DeleteService(svc.key)]
        assert backend.read() == Table([], timeouts=backend.read().timeouts,
                                       sysctls=backend.read().sysctls, rules={})

    @requires(Capability.MARK_RULES)
    def test_adding_an_existing_rule_raises_rule_exists_and_changes_nothing(self, backend: Backend) -> None:
        lb = Balancer(backend)
        lb.execute([AddRule(FirewallMark(3, "udp"))])
        before = backend.read()
        with pytest.raises(RuleExists):
            lb.execute([AddRule(FirewallMark(4, "tcp")), AddRule(FirewallMark(3, "tcp"))])
        with pytest.raises(RuleNotFound):
            lb.execute([DeleteRule(FirewallMark(3, "tcp"))])
        assert backend.read() == before

    @requires(Capability.AUTO_NAT, Capability.REDIRECT, Capability.LOOPBACK_VIP)
    def test_changing_a_rule_replaces_it(self, backend: Backend) -> None:
        lb = Balancer(backend)
        first: list[Rule] = [AutoNat("eth0", ["10.0.0.0/24"]), Redirect(VIP), LoopbackVIP("192.0.2.11")]
        lb.apply(Table([], rules=first))
        second: list[Rule] = [AutoNat("eth0", ["10.0.0.0/24"], to_source="203.0.113.1"), Redirect(VIP),
                              LoopbackVIP("192.0.2.12")]
        assert lb.apply(Table([], rules=second)) == [DeleteRule(first[2]), DeleteRule(first[0]),
                                                     AddRule(second[0]), AddRule(second[2])]
        assert backend.read().rules == {r.key: r for r in second}

    @requires(Capability.TIMEOUTS)
    def test_timeouts_read_back(self, backend: Backend) -> None:
        Balancer(backend).set_timeouts(Timeouts(tcp=600, tcpfin=30, udp=60))
        assert backend.read().timeouts == Timeouts(tcp=600, tcpfin=30, udp=60)

    def test_read_returns_an_immutable_table(self, backend: Backend) -> None:
        Balancer(backend).add_service(web())
        table = backend.read()
        assert isinstance(table, Table)
        with pytest.raises(TypeError):
            table.services[web().key] = web("wrr")  # type: ignore[index]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            table.timeouts = None  # type: ignore[misc]


def _tables() -> Any:
    """A hypothesis strategy of valid tables on the suite's VIP and fwmark 1: services of several
    schedulers, real servers shared between services, firewall marks, and policy routes whose
    tables move between marks and swap."""
    from hypothesis import strategies as st

    real_servers = st.lists(st.builds(
        lambda rip, port, weight: RealServer(rip, port, forward="nat", weight=weight),
        st.sampled_from(RIPS), st.sampled_from([80, 8080]), st.integers(0, 3)),
        max_size=3, unique_by=lambda rs: rs.key)
    keyed = st.builds(
        lambda proto, port, scheduler, rss: VirtualService(protocol=proto, address=VIP, port=port,
                                                           scheduler=scheduler, real_servers=rss),
        st.sampled_from(["tcp", "udp"]), st.sampled_from([80, 443]), st.sampled_from(["rr", "wrr", "wlc", "sh"]),
        real_servers)
    marked_real_servers = st.lists(st.builds(lambda rip, weight: RealServer(rip, 0, forward="nat", weight=weight),
                                             st.sampled_from(RIPS), st.integers(0, 3)),
                                   max_size=3, unique_by=lambda rs: rs.key)
    marked = st.builds(lambda scheduler, rss: VirtualService(fwmark=1, scheduler=scheduler, real_servers=rss),
                       st.sampled_from(["rr", "wlc"]), marked_real_servers)
    services = st.lists(st.one_of(keyed, marked), max_size=4, unique_by=lambda s: s.key)
    marks = st.lists(st.builds(lambda mark, ports: FirewallMark(mark, "tcp", ports=ports),
                               st.integers(1, 3), st.sampled_from([(80,), (443,), (80, 443)])),
                     max_size=3, unique_by=lambda r: r.key)
    # Marks 3..5 each take a table of 106..108, no two the same: moves and swaps between draws.
    routes = st.builds(lambda marks, tables: [PolicyRoute(m, t) for m, t in zip(marks, tables)],
                       st.lists(st.integers(3, 5), max_size=3, unique=True),
                       st.permutations([106, 107, 108]))
    timeouts = st.sampled_from([Timeouts(), Timeouts(tcp=600, tcpfin=30, udp=60)])
    return st.builds(lambda svcs, m, r, t: Table(svcs, rules=[*m, *r], timeouts=t), services, marks, routes,
                     timeouts)
