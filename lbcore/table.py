"""Table: an immutable snapshot of what lbcore owns in one backend."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType

import attrs

from lbcore._fields import shown
from lbcore.model import ServiceKey, Sysctls, Timeouts, VirtualService
from lbcore.rules import Rule, RuleKey


def _as_services(value: object) -> Mapping[ServiceKey, VirtualService]:
    if isinstance(value, MappingProxyType):
        return value
    if isinstance(value, Mapping):
        return MappingProxyType(dict(value))
    services = list(value) if isinstance(value, Iterable) else []
    return MappingProxyType({svc.key: svc for svc in services})


def _as_rules(value: object) -> Mapping[RuleKey, Rule] | None:
    if value is None or isinstance(value, MappingProxyType):
        return value
    if isinstance(value, Mapping):
        return MappingProxyType(dict(value))
    rules = list(value) if isinstance(value, Iterable) else []
    return MappingProxyType({rule.key: rule for rule in rules})


@attrs.frozen
class Table:
    """What lbcore owns: virtual services (with their real servers), rules, timeouts and sysctls.

    ``rules`` are the netfilter and routing objects of :mod:`lbcore.rules` (firewall marks,
    Auto-NAT, redirects, policy routes), by their keys. ``rules``, ``timeouts`` and ``sysctls``
    are None in a desired table that leaves them alone; a backend's ``read()`` fills them in
    (``rules`` with an empty mapping where the backend holds none).

    .. versionadded:: 0.1
    """

    services: Mapping[ServiceKey, VirtualService] = attrs.field(
        factory=dict, converter=_as_services
    )
    timeouts: Timeouts | None = None
    sysctls: Sysctls | None = None
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
