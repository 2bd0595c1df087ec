"""Composite: one apply across backends, each op to the backend that can express it, undone as one."""

from collections.abc import Collection, Sequence

import pytest

from lbcore import (
    AddRule,
    BackendError,
    Balancer,
    DeleteService,
    InvalidField,
    RealServer,
    RuleExists,
    ServiceKey,
    ServiceNotFound,
    StateUnknown,
    VirtualService,
    open_backend,
)
from lbcore.backend import RULE_CAPABILITIES
from lbcore.composite import Composite
from lbcore.ops import DeleteRule, Op
from lbcore.rules import AutoNat, FirewallMark
from lbcore.sim import SimBackend
from lbcore.table import Table

SERVICE = VirtualService(fwmark=1, scheduler="rr", real_servers=[RealServer("198.51.100.1", 0)])
MARK = FirewallMark(1, "tcp", ports=(80, 443))


def director() -> SimBackend:
    """A simulated IPVS that, like the ipvs backend, has no netfilter rules."""
    sim = SimBackend()
    sim.capabilities = sim.capabilities - RULE_CAPABILITIES
    return sim


class Refusing(SimBackend):
    """A netfilter stand-in whose commits fail from the n-th on, as a kernel refusing would."""

    def __init__(self, fail_from: int) -> None:
        super().__init__(dataplane="iptables")
        self.fail_from, self.applies = fail_from, 0

    def apply(self, ops: Sequence[Op]) -> None:
        self.applies += 1
        if self.applies >= self.fail_from:
            raise BackendError(self.name, "commit refused")
        super().apply(ops)


def test_a_fwmark_service_and_its_marks_go_to_their_own_backends() -> None:
    ipvs, iptables = director(), SimBackend(dataplane="iptables")
    lb = Balancer(Composite(ipvs, iptables))
    lb.apply(Table([SERVICE], rules=[MARK]))
    assert list(ipvs.read()) == [SERVICE] and ipvs.read().rules == {}
    assert list(iptables.read()) == [] and iptables.read().rules == {MARK.key: MARK}
    assert lb.read() == Table([SERVICE], timeouts=ipvs.read().timeouts, sysctls=ipvs.read().sysctls,
                              rules=[MARK])
    assert lb.plan(Table([SERVICE], rules=[MARK])) == []


def test_a_failing_second_backend_undoes_the_first() -> None:
    ipvs = director()
    lb = Balancer(Composite(ipvs, Refusing(fail_from=1)))
    with pytest.raises(BackendError):
        lb.apply(Table([SERVICE], rules=[MARK]))
    assert len(ipvs.read()) == 0


def test_a_failing_undo_raises_state_unknown_naming_what_is_in_effect() -> None:
    ipvs, refusing = director(), Refusing(fail_from=3)
    lb = Balancer(Composite(ipvs, refusing))
    lb.apply(Table([], rules=[AutoNat("eth0")]))  # apply 1 of the stand-in
    # Runs: delete the Auto-NAT (apply 2), add the service (first backend), add the mark (apply 3:
    # refused); undo: the service goes, then re-adding the Auto-NAT (apply 4) is refused too.
    with pytest.raises(StateUnknown) as unknown:
        lb.apply(Table([SERVICE], rules=[MARK]))
    assert unknown.value.applied == [DeleteRule(AutoNat("eth0"))]
    assert len(ipvs.read()) == 0 and refusing.read().rules == {}


def test_open_backend_joins_backends_with_a_plus() -> None:
    composite = open_backend("sim+sim", sim={"dataplane": "ipvs"})
    assert isinstance(composite, Composite) and composite.name == "sim+sim"
    with pytest.raises(InvalidField) as refused:
        open_backend("sim+sim", ipvs={})
    assert refused.value.field == "options" and refused.value.value == ["ipvs"]


def test_a_stale_change_changes_no_backend_at_all() -> None:
    ipvs, iptables = director(), SimBackend(dataplane="iptables")
    lb = Balancer(Composite(ipvs, iptables))
    lb.apply(Table([SERVICE], rules=[MARK]))
    before = lb.read()
    with pytest.raises(RuleExists):  # the service's deletion comes first, but must not happen
        lb.execute([DeleteService(SERVICE.key), AddRule(MARK)])
    with pytest.raises(ServiceNotFound):  # nor the mark's
        lb.execute([DeleteRule(MARK), DeleteService(VirtualService(fwmark=9).key)])
    assert lb.read() == before


def test_a_composite_counts_connections_where_its_services_are() -> None:
    ipvs = director()
    composite = Composite(ipvs, SimBackend(dataplane="iptables"))
    Balancer(composite).apply([SERVICE])
    assert ipvs.connect("203.0.113.1", "192.0.2.1", 80, mark=1) is not None
    assert composite.connection_counts(SERVICE.key) == {(SERVICE.real_servers[0].address, 0): 1}
    assert SimBackend(dataplane="iptables").connection_counts(SERVICE.key) is None


class Counting(SimBackend):
    """A simulator that counts the reads made of it."""

    def __init__(self, dataplane: str = "ipvs") -> None:
        super().__init__(dataplane=dataplane)
        self.reads = 0

    def read(self, keys: Collection[ServiceKey] | None = None) -> Table:
        self.reads += 1
        return super().read(keys)


def test_a_change_reads_each_backend_once_and_the_balancer_reads_nothing() -> None:
    # The check is made once per backend, against what it holds, not once more by the caller.
    plain = Counting()
    Balancer(plain).add_service(VirtualService("tcp", "192.0.2.10", 80, scheduler="rr"))
    assert plain.reads == 0  # the simulator prepares on its own table: no read() at all
    ipvs, iptables = Counting(), Counting(dataplane="iptables")
    ipvs.capabilities = ipvs.capabilities - RULE_CAPABILITIES
    Balancer(Composite(ipvs, iptables)).execute([AddRule(MARK), *_add(SERVICE)])
    assert (ipvs.reads, iptables.reads) == (1, 1)  # the composite's joined read; the runs read none


def _add(svc: VirtualService) -> list[Op]:
    from lbcore.ops import AddRealServer, AddService

    return [AddService(svc.settings), *(AddRealServer(svc.key, rs) for rs in svc.real_servers)]
