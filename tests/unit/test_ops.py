"""ops: undo_ops refuses stale ops with the typed errors, and rules have their own transitions."""

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
from lbcore.ops import apply_ops, undo_ops

WEB = VirtualService("tcp", "192.0.2.10", 80, real_servers=[RealServer("198.51.100.1", 80)])


def test_undo_ops_of_a_stale_op_raises_the_typed_error_not_a_lookup_failure() -> None:
    with pytest.raises(ServiceNotFound):
        undo_ops(Table(), [DeleteService(WEB.key)])
    with pytest.raises(RealServerNotFound):
        undo_ops(Table([WEB]), [DeleteRealServer(WEB.key, RealServer("198.51.100.9", 80).address, 80)])
    with pytest.raises(RealServerNotFound):
        undo_ops(Table([WEB]), [EditRealServer(WEB.key, RealServer("198.51.100.9", 80))])


def test_a_rule_is_added_once_and_deleted_only_as_it_is() -> None:
    mark = FirewallMark(1, "tcp", ports=(80,))
    table = apply_ops(Table(), [AddRule(mark)])
    assert table.rules == {mark.key: mark}
    with pytest.raises(RuleExists):
        apply_ops(table, [AddRule(FirewallMark(1, "udp"))])
    with pytest.raises(RuleNotFound):
        apply_ops(table, [DeleteRule(FirewallMark(1, "udp"))])
    assert undo_ops(table, [DeleteRule(mark)]) == [[AddRule(mark)]]
    assert apply_ops(table, [DeleteRule(mark)]).rules == {}


def test_two_policy_routes_cannot_share_a_routing_table() -> None:
    table = apply_ops(Table(), [AddRule(PolicyRoute(1, 100))])
    with pytest.raises(InvalidField) as refused:
        apply_ops(table, [AddRule(PolicyRoute(2, 100))])
    assert (refused.value.owner, refused.value.field, refused.value.value) == ("PolicyRoute", "table", 100)
    assert apply_ops(table, [AddRule(PolicyRoute(2, 101))]).rules is not None
