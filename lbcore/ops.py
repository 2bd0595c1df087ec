"""Op classes and ``apply_op(table, op)``: the one transition function of every backend.

Each op is one kernel-sized change, named with ipvsadm's verbs. ``apply_op`` checks its
preconditions against the current :class:`~lbcore.table.Table` and returns the next one; a
backend carries out only ops that passed it, so every backend refuses the same mistakes with the
same errors.

Every op checks its payload when it is made (``SetTimeouts(900)`` is an
:class:`~lbcore.errors.InvalidField` naming ``SetTimeouts.timeouts`` and 900), so a batch never
meets a wrong type halfway through being carried out.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, assert_never

import attrs

from lbcore._fields import Validator, any_port, as_address, unicast, value_object
from lbcore.errors import (
    InvalidField,
    RealServerExists,
    RealServerNotFound,
    RuleExists,
    RuleNotFound,
    ServiceExists,
    ServiceNotFound,
)
from lbcore.model import IPAddress, RealServer, ServiceKey, Sysctls, Timeouts, VirtualService
from lbcore.rules import AutoNat, FirewallMark, LoopbackVIP, PolicyRoute, Redirect, Rule, RuleKey
from lbcore.table import Table


class OpKind(enum.Enum):
    """What an op does; backends map kernel errors by (kind, errno)."""

    ADD_SERVICE = "add_service"
    EDIT_SERVICE = "edit_service"
    DELETE_SERVICE = "delete_service"
    ADD_REAL_SERVER = "add_real_server"
    EDIT_REAL_SERVER = "edit_real_server"
    DELETE_REAL_SERVER = "delete_real_server"
    SET_TIMEOUTS = "set_timeouts"
    SET_SYSCTLS = "set_sysctls"
    ADD_RULE = "add_rule"
    DELETE_RULE = "delete_rule"


def _instance(cls: type[Any], what: str) -> Validator:
    """A validator refusing anything but an instance of ``cls``: ``is not <what>``.

    An op's payload is checked when the op is made, so a backend never meets a wrong type in
    the middle of carrying out a batch (the simulator once deleted a service, then failed on a
    SetTimeouts(900) that held an int).
    """

    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, cls):
            raise InvalidField(type(inst).__name__, attribute.name, value, f"is not {what}")

    return check


_service_key = _instance(ServiceKey, "a ServiceKey (VirtualService.key)")
_real_server = _instance(RealServer, "a RealServer")


def _settings_only(inst: object, attribute: attrs.Attribute[VirtualService], value: object) -> None:
    if not isinstance(value, VirtualService):
        raise InvalidField(type(inst).__name__, attribute.name, value, "is not a VirtualService")
    if value.real_servers:
        raise InvalidField(
            type(inst).__name__, attribute.name, str(value.key),
            "carries real servers: add them with AddRealServer ops",
        )


@value_object
@attrs.frozen
class AddService:
    """Create a virtual service with no real servers (ipvsadm -A)."""

    kind: ClassVar[OpKind] = OpKind.ADD_SERVICE
    service: VirtualService = attrs.field(validator=_settings_only)

    def __str__(self) -> str:
        return f"add_service {self.service.key}"


@value_object
@attrs.frozen
class EditService:
    """Replace a virtual service's settings, keeping its real servers (ipvsadm -E)."""

    kind: ClassVar[OpKind] = OpKind.EDIT_SERVICE
    service: VirtualService = attrs.field(validator=_settings_only)

    def __str__(self) -> str:
        return f"edit_service {self.service.key}"


@value_object
@attrs.frozen
class DeleteService:
    """Delete a virtual service and its real servers (ipvsadm -D)."""

    kind: ClassVar[OpKind] = OpKind.DELETE_SERVICE
    key: ServiceKey = attrs.field(validator=_service_key)

    def __str__(self) -> str:
        return f"delete_service {self.key}"


@value_object
@attrs.frozen
class AddRealServer:
    """Add a real server to a virtual service (ipvsadm -a)."""

    kind: ClassVar[OpKind] = OpKind.ADD_REAL_SERVER
    key: ServiceKey = attrs.field(validator=_service_key)
    real_server: RealServer = attrs.field(validator=_real_server)

    def __str__(self) -> str:
        return f"add_real_server {self.key} {self.real_server.endpoint}"


@value_object
@attrs.frozen
class EditRealServer:
    """Replace a real server's settings (ipvsadm -e)."""

    kind: ClassVar[OpKind] = OpKind.EDIT_REAL_SERVER
    key: ServiceKey = attrs.field(validator=_service_key)
    real_server: RealServer = attrs.field(validator=_real_server)

    def __str__(self) -> str:
        return f"edit_real_server {self.key} {self.real_server.endpoint}"


@value_object
@attrs.frozen
class DeleteRealServer:
    """Delete a real server from a virtual service (ipvsadm -d)."""

    kind: ClassVar[OpKind] = OpKind.DELETE_REAL_SERVER
    key: ServiceKey = attrs.field(validator=_service_key)
    address: IPAddress = attrs.field(converter=as_address, validator=unicast)
    port: int = attrs.field(validator=any_port)

    def __str__(self) -> str:
        return f"delete_real_server {self.key} {self.address}:{self.port}"


@value_object
@attrs.frozen
class SetTimeouts:
    """Set the global tcp, tcpfin and udp timeouts (ipvsadm --set)."""

    kind: ClassVar[OpKind] = OpKind.SET_TIMEOUTS
    timeouts: Timeouts = attrs.field(validator=_instance(Timeouts, "a Timeouts"))

    def __str__(self) -> str:
        t = self.timeouts
        return f"set_timeouts {t.tcp} {t.tcpfin} {t.udp}"


@value_object
@attrs.frozen
class SetSysctls:
    """Set the IPVS sysctls (net.ipv4.vs.*)."""

    kind: ClassVar[OpKind] = OpKind.SET_SYSCTLS
    sysctls: Sysctls = attrs.field(validator=_instance(Sysctls, "a Sysctls"))

    def __str__(self) -> str:
        return "set_sysctls"


def _rule(inst: object, attribute: attrs.Attribute[Rule], value: object) -> None:
    if not isinstance(value, (FirewallMark, AutoNat, Redirect, PolicyRoute, LoopbackVIP)):
        raise InvalidField(type(inst).__name__, attribute.name, value, "is not an lbcore rule")


@value_object
@attrs.frozen
class AddRule:
    """Add a netfilter or routing rule (:mod:`lbcore.rules`).

    .. versionadded:: 0.2
    """

    kind: ClassVar[OpKind] = OpKind.ADD_RULE
    rule: Rule = attrs.field(validator=_rule)

    def __str__(self) -> str:
        return f"add_rule {self.rule.text()}"


@value_object
@attrs.frozen
class DeleteRule:
    """Delete a rule; it carries the whole rule, which must be the one the table holds.

    .. versionadded:: 0.2
    """

    kind: ClassVar[OpKind] = OpKind.DELETE_RULE
    rule: Rule = attrs.field(validator=_rule)

    def __str__(self) -> str:
        return f"delete_rule {self.rule.text()}"


Op = (
    AddService
    | EditService
    | DeleteService
    | AddRealServer
    | EditRealServer
    | DeleteRealServer
    | SetTimeouts
    | SetSysctls
    | AddRule
    | DeleteRule
)
#: Every op class: ``Op`` is closed, so a dispatch over them ends in ``typing.assert_never``.
OP_CLASSES: tuple[type[Op], ...] = typing.get_args(Op)


def _check_kind(op: object) -> None:
    if not isinstance(op, OP_CLASSES):  # a caller without a type checker passed something else
        raise InvalidField("Op", "kind", op, "is not an lbcore op")


def _service(services: dict[ServiceKey, VirtualService], key: ServiceKey) -> VirtualService:
    try:
        return services[key]
    except KeyError:
        raise ServiceNotFound(f"no virtual service {key}") from None


def _transition(services: dict[ServiceKey, VirtualService], table: Table, op: Op) -> Table:
    """Check ``op`` against ``services`` and change them in place; return the non-service part.

    The caller has checked that ``op`` is an op (:func:`_check_kind`).
    """
    if isinstance(op, AddService):
        if op.service.key in services:
            raise ServiceExists(f"virtual service {op.service.key} exists already")
        services[op.service.key] = op.service
    elif isinstance(op, EditService):
        old = _service(services, op.service.key)
        for rs in old.real_servers:
            op.service.check_real_server(rs)
        services[op.service.key] = attrs.evolve(op.service, real_servers=old.real_servers)
    elif isinstance(op, DeleteService):
        _service(services, op.key)
        del services[op.key]
    elif isinstance(op, (AddRealServer, EditRealServer)):
        svc = _service(services, op.key)
        svc.check_real_server(op.real_server)
        present = svc.real_server(op.real_server.address, op.real_server.port) is not None
        if isinstance(op, AddRealServer):
            if present:
                raise RealServerExists(f"{op.key} has real server {op.real_server.endpoint}")
            real_servers = (*svc.real_servers, op.real_server)
        else:
            if not present:
                raise RealServerNotFound(f"{op.key} has no real server {op.real_server.endpoint}")
            real_servers = tuple(
                op.real_server if rs.key == op.real_server.key else rs for rs in svc.real_servers
            )
        services[op.key] = attrs.evolve(svc, real_servers=real_servers)
    elif isinstance(op, DeleteRealServer):
        svc = _service(services, op.key)
        if svc.real_server(op.address, op.port) is None:
            raise RealServerNotFound(f"{op.key} has no real server {op.address}:{op.port}")
        key = (op.address, op.port)
        services[op.key] = attrs.evolve(
            svc, real_servers=tuple(rs for rs in svc.real_servers if rs.key != key)
        )
    elif isinstance(op, SetTimeouts):
        return attrs.evolve(table, timeouts=op.timeouts)
    elif isinstance(op, SetSysctls):
        return attrs.evolve(table, sysctls=op.sysctls)
    elif isinstance(op, (AddRule, DeleteRule)):
        return attrs.evolve(table, rules=_rule_transition(table.rules or {}, op))
    else:
        assert_never(op)
    return table


def _rule_transition(rules: Mapping[RuleKey, Rule], op: AddRule | DeleteRule) -> dict[RuleKey, Rule]:
    key = op.rule.key
    have = rules.get(key)
    if isinstance(op, AddRule) and have is not None:
        raise RuleExists(f"rule {have.text()!r} exists already")
    if isinstance(op, DeleteRule) and have != op.rule:
        raise RuleNotFound(f"no rule {op.rule.text()!r}" + (f" (there is {have.text()!r})" if have else ""))
    if isinstance(op, AddRule) and isinstance(op.rule, PolicyRoute):
        # A policy route owns its table's one default route: two in one table would fight over it.
        for other in rules.values():
            if isinstance(other, PolicyRoute) and other.table == op.rule.table:
                raise InvalidField("PolicyRoute", "table", op.rule.table, f"is the table of {other.text()!r}")
    changed = dict(rules)
    if isinstance(op, AddRule):
        changed[key] = op.rule
    else:
        del changed[key]
    return changed


def apply_op(table: Table, op: Op) -> Table:
    """Return the table after ``op``; ``table`` itself is never changed.

    Raises:
        ServiceExists: AddService of a service that exists.
        ServiceNotFound: any other op on a service that does not exist.
        RealServerExists: AddRealServer of a real server the service has.
        RealServerNotFound: EditRealServer or DeleteRealServer of one it does not have.
        RuleExists, RuleNotFound: AddRule of a key the table holds; DeleteRule of a rule it lacks.
        InvalidField: a PolicyRoute into a routing table that another one uses.
        InvalidField: the real server does not fit the service (family, port).
    """
    return apply_ops(table, (op,))


def apply_ops(table: Table, ops: Iterable[Op]) -> Table:
    """Fold :func:`apply_op` over ``ops`` (copying the services once, not once per op).

    Raises:
        The errors of :func:`apply_op`, for the first op that fails; ``table`` is unchanged.
    """
    services = dict(table.services)
    for op in ops:
        _check_kind(op)
        table = _transition(services, table, op)
    return attrs.evolve(table, services=services)


def service_key(op: Op) -> ServiceKey | None:
    """The service ``op`` changes, or None (timeouts, sysctls, rules)."""
    if isinstance(op, (AddService, EditService)):
        return op.service.key
    if isinstance(op, (DeleteService, AddRealServer, EditRealServer, DeleteRealServer)):
        return op.key
    if isinstance(op, (SetTimeouts, SetSysctls, AddRule, DeleteRule)):
        return None
    assert_never(op)


def service_keys(ops: Iterable[Op]) -> set[ServiceKey]:
    """The services ``ops`` change: what a backend reads to check them (``read(keys)``)."""
    return {k for k in map(service_key, ops) if k is not None}


@attrs.frozen
class Prepared:
    """Ops checked against a table, with what they lead to and how to take each back.

    Only :func:`~lbcore.prepare` makes one; a backend carries out ``ops`` and, on failure, ``undo``.

    Attributes:
        before: the table the ops were checked against.
        after: the table after every op.
        ops: the ops, in order.
        undo: for each op, the ops that take it back (configuration only: a re-added real server
            comes back at the head of the kernel's list and without its counters; connections are
            not restored).

    .. versionadded:: 0.3
    """

    before: Table
    after: Table
    ops: tuple[Op, ...]
    undo: tuple[tuple[Op, ...], ...]

    def undo_of(self, start: int = 0, stop: int | None = None) -> list[Op]:
        """The ops that take back ``ops[start:stop]``, newest first."""
        return [u for us in reversed(self.undo[start:stop]) for u in us]


def prepare(table: Table, ops: Iterable[Op]) -> Prepared:
    """Check ``ops`` in order against ``table`` (:func:`apply_op` each) and compute their undo.

    This is the core's one check: every backend's ``apply`` runs it against the state it holds
    (read under its own lock), and carries out only what it returns.

    Raises:
        The errors of :func:`apply_op`, for the first op that fails; nothing is returned, so
        nothing can be carried out.
    """
    before = table
    services = dict(table.services)
    checked: list[Op] = []
    undo: list[tuple[Op, ...]] = []
    for op in ops:
        _check_kind(op)
        # The inverse reads what the op is about to change; if that is missing, the op does not
        # fit and _transition raises the typed error next.
        inverse = _inverse(services, table, op)
        table = _transition(services, table, op)
        checked.append(op)
        undo.append(inverse)
    return Prepared(before, attrs.evolve(table, services=services), tuple(checked), tuple(undo))


def _inverse(services: Mapping[ServiceKey, VirtualService], table: Table, op: Op) -> tuple[Op, ...]:
    """The ops that undo ``op`` from the state ``services``/``table``; () if the op does not fit."""
    if isinstance(op, AddService):
        return (DeleteService(op.service.key),)
    if isinstance(op, EditService):
        old = services.get(op.service.key)
        return () if old is None else (EditService(old.settings),)
    if isinstance(op, DeleteService):
        old = services.get(op.key)
        if old is None:
            return ()
        return (AddService(old.settings), *(AddRealServer(op.key, rs) for rs in old.real_servers))
    if isinstance(op, AddRealServer):
        return (DeleteRealServer(op.key, op.real_server.address, op.real_server.port),)
    if isinstance(op, (EditRealServer, DeleteRealServer)):
        svc = services.get(op.key)
        address, port = (op.real_server.address, op.real_server.port) if isinstance(op, EditRealServer) \
            else (op.address, op.port)
        old_rs = None if svc is None else svc.real_server(address, port)
        if old_rs is None:
            return ()
        return (EditRealServer(op.key, old_rs),) if isinstance(op, EditRealServer) else (AddRealServer(op.key, old_rs),)
    if isinstance(op, SetTimeouts):
        return (SetTimeouts(table.timeouts),) if table.timeouts is not None else ()
    if isinstance(op, SetSysctls):
        return (SetSysctls(table.sysctls),) if table.sysctls is not None else ()
    if isinstance(op, AddRule):
        return (DeleteRule(op.rule),)
    if isinstance(op, DeleteRule):
        return (AddRule(op.rule),)
    assert_never(op)
