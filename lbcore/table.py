"""Table: an immutable snapshot of what lbcore owns in one backend."""

from __future__ import annotations

import typing
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from lbcore._fields import Validator, shown
from lbcore.errors import InvalidField
from lbcore.model import ServiceKey, Sysctls, Timeouts, VirtualService
from lbcore.rules import Rule, RuleKey


def _as_services(value: object) -> Mapping[ServiceKey, VirtualService]:
    # None, 5 or object() were once an empty table, so Balancer.apply(Table(None)) deleted every
    # service: only a mapping or an iterable of services is a table's services.
    if isinstance(value, MappingProxyType) and all(isinstance(v, VirtualService) for v in value.values()):
        return value
    if isinstance(value, Mapping):
        services = list(value.values())
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        services = list(value)
    else:
        raise InvalidField("Table", "services", value, "is not a list of VirtualService")
    for svc in services:
        if not isinstance(svc, VirtualService):
            raise InvalidField("Table", "services", svc, "is not a VirtualService")
    return MappingProxyType({svc.key: svc for svc in services})


_RULE_TYPES = typing.get_args(Rule)


def _as_rules(value: object) -> Mapping[RuleKey, Rule] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        rules = list(value.values())
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        rules = list(value)
    else:
        raise InvalidField("Table", "rules", value, "is not a list of rules (lbcore.rules)")
    for rule in rules:
        if not isinstance(rule, _RULE_TYPES):
            raise InvalidField("Table", "rules", rule, "is not a rule (lbcore.rules)")
    return MappingProxyType({rule.key: rule for rule in rules})


def _optional(cls: type) -> Validator:
    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and not isinstance(value, cls):
            raise InvalidField("Table", attribute.name, value, f"is not a {cls.__name__} or None")

    return check


@attrs.frozen
class Table:
    """What lbcore owns: virtual services (with their real servers), rules, timeouts and sysctls.

    ``rules`` are the netfilter and routing objects of :mod:`lbcore.rules` (firewall marks,
    Auto-NAT, redirects, policy routes), by their keys. ``rules``, ``timeouts`` and ``sysctls``
    are None in a desired table that leaves them alone; a backend's ``read()`` fills them in
    (``rules`` with an empty mapping where the backend holds none).

    ``services`` is a list (any iterable) or a mapping of :class:`~lbcore.model.VirtualService`;
    anything else, None included, is refused rather than taken for "no services", which a
    desired table would turn into deleting every service.

    Raises:
        InvalidField: ``services`` or ``rules`` is not a list or mapping of services or rules,
            or holds something else; ``timeouts`` or ``sysctls`` is not one or None.

    .. versionadded:: 0.1
    """

    services: Mapping[ServiceKey, VirtualService] = attrs.field(
        factory=dict, converter=_as_services
    )
    timeouts: Timeouts | None = attrs.field(default=None, validator=_optional(Timeouts))
    sysctls: Sysctls | None = attrs.field(default=None, validator=_optional(Sysctls))
    rules: Mapping[RuleKey, Rule] | None = attrs.field(default=None, converter=_as_rules)

    def __repr__(self) -> str:
        # Services and rules as the lists the constructor takes, not as dumps of their mappings.
        parts = [f"services={shown(list(self.services.values()))}"]
        if self.rules is not None:
            parts.append(f"rules={shown(list(self.rules.values()))}")
        parts += [f"{name}={value!r}" for name, value in (("timeouts", self.timeouts), ("sysctls", self.sysctls))
                  if value is not None]
        return f"Table({', '.join(parts)})"

    def __iter__(self) -> Iterator[VirtualService]:
        return iter(self.services.values())

    def __len__(self) -> int:
        return len(self.services)

    def get(self, key: ServiceKey) -> VirtualService | None:
        """The service with this identity, or None."""
        return self.services.get(key)
