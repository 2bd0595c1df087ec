"""plan(current, desired): the fewest ops, in a safe order, that turn one table into the other."""

from __future__ import annotations

from collections.abc import Mapping

from lbcore.model import VirtualService
from lbcore.ops import (
    AddRealServer,
    AddRule,
    AddService,
    DeleteRealServer,
    DeleteRule,
    DeleteService,
    EditRealServer,
    EditService,
    Op,
    SetSysctls,
    SetTimeouts,
)
from lbcore.rules import Rule, RuleKey
from lbcore.table import Table


def plan(current: Table, desired: Table) -> list[Op]:
    """Return the ops that make ``current`` into ``desired``; none if they already agree.

    Order: sysctls and timeouts first (they change how the rest behaves), then deleted services,
    then changed services (their settings, then real servers: deletes, edits, adds), then new
    services with their real servers. Real servers are added in the desired order, so the kernel's
    list (newest first) is the reverse of it. Rules that go are deleted before any service changes
    and new ones added after them all, so a firewall mark never feeds a service that is not there
    yet, or no longer; a rule that changes is deleted at the end, and added again after every
    such delete (one commit, on a backend that commits per table).

    Every intermediate state is valid, whatever the order of ``current`` and ``desired``: every
    delete of a rule comes before every add, so a routing table that moves from one mark to
    another, or two marks that swap their tables, never has two policy routes at once. Rules are
    taken in the order of their keys, not of the mappings (which may follow a set's hash order).
    ``desired.timeouts``, ``desired.sysctls`` or ``desired.rules`` of None leave those alone.
    """
    ops: list[Op] = []
    if desired.sysctls is not None and desired.sysctls != current.sysctls:
        ops.append(SetSysctls(desired.sysctls))
    if desired.timeouts is not None and desired.timeouts != current.timeouts:
        ops.append(SetTimeouts(desired.timeouts))
    have_rules = current.rules or {}
    want_rules = have_rules if desired.rules is None else desired.rules
    ops.extend(DeleteRule(have_rules[k]) for k in _sorted(have_rules) if k not in want_rules)
    for key in current.services:
        if key not in desired.services:
            ops.append(DeleteService(key))
    for key, want in desired.services.items():
        have = current.services.get(key)
        if have is None:
            ops.append(AddService(want.settings))
            ops.extend(AddRealServer(key, rs) for rs in want.real_servers)
            continue
        if have.settings != want.settings:
            ops.append(EditService(want.settings))
        ops.extend(_real_server_ops(have, want))
    changed = [k for k in _sorted(want_rules) if have_rules.get(k) != want_rules[k]]
    ops.extend(DeleteRule(have_rules[k]) for k in changed if k in have_rules)
    ops.extend(AddRule(want_rules[k]) for k in changed)
    return ops


def _sorted(rules: Mapping[RuleKey, Rule]) -> list[RuleKey]:
    """The keys in a fixed order: by kind, then by the kind's fields (each kind's keys are alike)."""
    return sorted(rules, key=lambda k: tuple(map(str, k)))


def _real_server_ops(have: VirtualService, want: VirtualService) -> list[Op]:
    key = want.key
    wanted = {rs.key: rs for rs in want.real_servers}
    present = {rs.key: rs for rs in have.real_servers}
    ops: list[Op] = [
        DeleteRealServer(key, rs.address, rs.port) for rs in have.real_servers if rs.key not in wanted
    ]
    for rs in want.real_servers:
        old = present.get(rs.key)
        if old is None:
            continue
        if old != rs:
            ops.append(EditRealServer(key, rs))
    ops.extend(AddRealServer(key, rs) for rs in want.real_servers if rs.key not in present)
    return ops
