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


def _items(value: object, field: str, types: tuple[type, ...], what: str) -> list[Any]:
    # None, 5 or object() were once an empty table, so Balancer.apply(Table(None)) deleted every
    # service: only a mapping (its values) or an iterable of the right objects is taken.
    if isinstance(value, Mapping):
        items = list(value.values())
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        items = list(value)
    else:
        raise InvalidField("Table", field, value, f"is not a list of {what}")
    for item in items:
        if not isinstance(item, types):
            raise InvalidField("Table", field, item, f"is not a {what}")
    return items


def _as_services(value: object) -> Mapping[ServiceKey, VirtualService]:
    return MappingProxyType({svc.key: svc for svc in _items(value, "services", (VirtualService,), "VirtualService")})


_RULE_TYPES = typing.get_args(Rule)


def _as_rules(value: object) -> Mapping[RuleKey, Rule] | None:
    if value is None:
        return None
    return MappingProxyType({rule.key: rule for rule in _items(value, "rules", _RULE_TYPES, "rule (lbcore.rules)")})


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
