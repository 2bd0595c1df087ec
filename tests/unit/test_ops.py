"""ops: prepare refuses stale ops with the typed errors, and rules have their own transitions."""

import pytest

from lbcore import (
    AddRule,
    DeleteRealServer,
    DeleteRule,
    DeleteService,
    EditRealServer,
    FirewallMark,
    InvalidField,
    PolicyRoute,
    RealServer,
    RealServerNotFound,
    RuleExists,
    RuleNotFound,
    ServiceNotFound,
    Table,
    VirtualService,
)
from lbcore.model import Timeouts
from lbcore.ops import AddRealServer, AddService, EditService, SetTimeouts, apply_ops, prepare

WEB = VirtualService("tcp", "192.0.2.10", 80, real_servers=[RealServer("198.51.100.1", 80)])


def test_prepare_of_a_stale_op_raises_the_typed_error_not_a_lookup_failure() -> None:
    with pytest.raises(ServiceNotFound):
        prepare(Table(), [DeleteService(WEB.key)])
    with pytest.raises(RealServerNotFound):
        prepare(Table([WEB]), [DeleteRealServer(WEB.key, RealServer("198.51.100.9", 80).address, 80)])
    with pytest.raises(RealServerNotFound):
        prepare(Table([WEB]), [EditRealServer(WEB.key, RealServer("198.51.100.9", 80))])


def test_a_rule_is_added_once_and_deleted_only_as_it_is() -> None:
    mark = FirewallMark(1, "tcp", ports=(80,))
    table = apply_ops(Table(), [AddRule(mark)])
    assert table.rules == {mark.key: mark}
    with pytest.raises(RuleExists):
        apply_ops(table, [AddRule(FirewallMark(1, "udp"))])
    with pytest.raises(RuleNotFound):
        apply_ops(table, [DeleteRule(FirewallMark(1, "udp"))])
    assert prepare(table, [DeleteRule(mark)]).undo == ((AddRule(mark),),)
    assert apply_ops(table, [DeleteRule(mark)]).rules == {}


def test_two_policy_routes_cannot_share_a_routing_table() -> None:
    table = apply_ops(Table(), [AddRule(PolicyRoute(1, 100))])
    with pytest.raises(InvalidField) as refused:
        apply_ops(table, [AddRule(PolicyRoute(2, 100))])
    assert (refused.value.owner, refused.value.field, refused.value.value) == ("PolicyRoute", "table", 100)
    assert apply_ops(table, [AddRule(PolicyRoute(2, 101))]).rules is not None


def test_prepare_gives_each_op_the_ops_that_take_it_back_and_undoing_all_restores_the_table() -> None:
    table = Table([WEB], timeouts=Timeouts(900, 120, 300))
    rs = RealServer("198.51.100.2", 80, weight=3)
    ops = [AddRealServer(WEB.key, rs), EditRealServer(WEB.key, RealServer("198.51.100.1", 80, weight=7)),
           EditService(VirtualService("tcp", "192.0.2.10", 80, scheduler="rr")), SetTimeouts(Timeouts(60, 30, 30)),
           DeleteService(WEB.key), AddService(WEB.settings)]
    prepared = prepare(table, ops)
    assert prepared.before is table
    assert prepared.ops == tuple(ops)
    assert prepared.after == apply_ops(table, ops)
    assert prepared.undo[0] == (DeleteRealServer(WEB.key, rs.address, 80),)
    assert prepared.undo[3] == (SetTimeouts(Timeouts(900, 120, 300)),)
    back = apply_ops(prepared.after, prepared.undo_of())
    assert back.timeouts == table.timeouts
    assert {k: set(s.real_servers) for k, s in back.services.items()} == \
        {k: set(s.real_servers) for k, s in table.services.items()}
    assert back.services[WEB.key].settings == WEB.settings


def test_prepare_refuses_what_is_not_an_op_with_a_typed_error() -> None:
    with pytest.raises(InvalidField) as refused:
        prepare(Table(), ["add_service"])  # type: ignore[list-item]
    assert (refused.value.owner, refused.value.field) == ("Op", "kind")

