"""plan() and apply_op(): the one transition function and the fewest ops between two tables."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbcore import (
    AddRealServer,
    AddService,
    DeleteRealServer,
    DeleteService,
    EditRealServer,
    EditService,
    InvalidField,
    RealServer,
    ServiceExists,
    SetTimeouts,
    Table,
    Timeouts,
    VirtualService,
    apply_op,
    plan,
)
from lbcore.ops import apply_ops


def svc(port: int = 80, scheduler: str = "wlc", weights: dict[int, int] | None = None) -> VirtualService:
    weights = weights if weights is not None else {1: 1, 2: 1}
    return VirtualService(protocol="tcp", address="192.0.2.1", port=port, scheduler=scheduler,
                          real_servers=[RealServer(f"198.51.100.{n}", port, weight=w) for n, w in weights.items()])


def test_apply_op_never_changes_its_input() -> None:
    empty = Table()
    after = apply_op(empty, AddService(svc().settings))
    assert len(empty) == 0 and len(after) == 1


def test_add_service_op_refuses_real_servers_inside() -> None:
    with pytest.raises(InvalidField) as error:
        AddService(svc())
    assert error.value.field == "service"


def test_plan_from_empty_adds_services_then_real_servers_in_order() -> None:
    ops = plan(Table(), Table([svc()]))
    assert ops == [AddService(svc().settings)] + [AddRealServer(svc().key, rs) for rs in svc().real_servers]


def test_plan_between_equal_tables_is_empty() -> None:
    assert plan(Table([svc()]), Table([svc()])) == []


def test_plan_orders_deletes_before_edits_before_adds() -> None:
    current = Table([svc(weights={1: 1, 2: 1, 3: 1}), svc(port=443)])
    desired = Table([svc(scheduler="rr", weights={2: 5, 4: 1})])
    ops = plan(current, desired)
    key = svc().key
    assert ops == [
        DeleteService(svc(port=443).key),
        EditService(svc(scheduler="rr").settings),
        DeleteRealServer(key, ipaddress.ip_address("198.51.100.1"), 80),
        DeleteRealServer(key, ipaddress.ip_address("198.51.100.3"), 80),
        EditRealServer(key, RealServer("198.51.100.2", 80, weight=5)),
        AddRealServer(key, RealServer("198.51.100.4", 80)),
    ]
    assert apply_ops(current, ops).services == desired.services


def test_timeouts_are_planned_only_when_the_desired_table_manages_them() -> None:
    current = Table([svc()], timeouts=Timeouts())
    assert plan(current, Table([svc()])) == []
    assert plan(current, Table([svc()], timeouts=Timeouts(tcp=60))) == [SetTimeouts(Timeouts(tcp=60))]


def test_apply_ops_raises_for_the_first_bad_op_and_keeps_the_table() -> None:
    table = Table([svc()])
    with pytest.raises(ServiceExists):
        apply_ops(table, [DeleteRealServer(svc().key, ipaddress.ip_address("198.51.100.1"), 80),
                          AddService(svc().settings)])
    assert table == Table([svc()])


services = st.builds(
    svc,
    port=st.sampled_from([80, 443, 8080]),
    scheduler=st.sampled_from(["rr", "wlc", "sh"]),
    weights=st.dictionaries(st.integers(1, 6), st.integers(0, 5), max_size=5),
)
tables = st.lists(services, max_size=3).map(lambda items: Table({s.key: s for s in items}))


@settings(max_examples=200, deadline=None)
@given(tables, tables)
def test_plan_always_reaches_the_desired_table_and_then_rests(current: Table, desired: Table) -> None:
    ops = plan(current, desired)
    reached = apply_ops(current, ops)
    assert {k: (s.settings, set(s.real_servers)) for k, s in reached.services.items()} == {
        k: (s.settings, set(s.real_servers)) for k, s in desired.services.items()
    }
    assert plan(reached, desired) == []
