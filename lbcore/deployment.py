"""Deployment: a whole director (or HA pair) as one value.

The deployment file, the importers (ipvsadm-save, keepalived.conf, ldirectord.cf) and Python code
all produce a :class:`Deployment`, so a script and a file mean the same thing::

    >>> from lbcore import Deployment, Persistence, RealServer, VirtualService
    >>> from lbcore.health import CheckedService, TCPCheck
    >>> web = VirtualService("tcp", "192.168.2.10", 8080, scheduler="wlc",
    ...                      persistence=Persistence(3600),
    ...                      real_servers=[RealServer("192.168.2.211", 8080), RealServer("192.168.2.212", 8080)])
    >>> d = Deployment(services=[CheckedService(service=web, check=TCPCheck())])
    >>> [str(s.key) for s in d.table()]
    ['-t 192.168.2.10:8080']
    >>> [c.service.key == web.key for c in d.checked()]
    [True]

A service is a :class:`~lbcore.model.VirtualService`, or a
:class:`~lbcore.health.monitor.CheckedService` when its real servers are health-checked. Parts that no
backend carries yet (floating IPs, other hosts' rules, an HA pair, the daemon's settings) are
part of the value, so a file that names them reads the same everywhere; :meth:`Deployment.table`
refuses them with :class:`~lbcore.errors.Unsupported` instead of leaving them out.

.. versionadded:: 0.4
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from lbcore._fields import (
    as_address,
    as_dict,
    boolean,
    instance_of,
    int_in,
    interface_name,
    mapping_of,
    number,
    optional_instance_of,
    refuse,
    unicast,
    value_object,
)
from lbcore.errors import InvalidField, Unsupported
from lbcore.health.monitor import CheckedService
from lbcore.model import IPAddress, Sysctls, Timeouts, VirtualService
from lbcore.rules import AutoNat, FirewallMark, LoopbackVIP, PolicyRoute, Redirect, Rule
from lbcore.table import Table

_RULE_TYPES = (FirewallMark, AutoNat, Redirect, PolicyRoute, LoopbackVIP)

Service = VirtualService | CheckedService


def _name(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value or not value.isascii() or not value.isprintable() or " " in value:
        refuse(inst, attribute, value, "is not a name (printable ASCII, no spaces)")


def _as_interface_address(value: object) -> object:
    if isinstance(value, str):
        try:
            return ipaddress.ip_interface(value)
        except ValueError:
            return value
    return value


def _interface_address(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        refuse(inst, attribute, value, "is not an address with its prefix length (e.g. 192.168.2.10/24)")
    if getattr(value, "scope_id", None):
        refuse(inst, attribute, value, "has a scope id: no backend carries one yet")


def _tuple_of(*types: type) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: tuple[object, ...]) -> None:
        for item in value:
            if not isinstance(item, types):
                names = " or ".join(t.__name__ for t in types)
                refuse(inst, attribute, item, f"is not a {names}")
    return check


def _as_tuple(value: object) -> object:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        return value
    return tuple(value)


def _is_tuple(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        refuse(inst, attribute, value, "is not a list")


def _optional_text(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _text(inst, attribute, value)


def _text(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value or not value.isprintable():
        refuse(inst, attribute, value, "is not one line of printable text")


@value_object
@attrs.frozen(kw_only=True)
class BackendChoice:
    """Which backend carries the deployment out, and its options.

    Args:
        name: a backend's name (``sim``, ``ipvs``, ``iptables``) or several joined by ``+``
            (``ipvs+iptables``: services to IPVS, rules to netfilter, as one change).
        options: the backend's options, as :func:`~lbcore.open_backend` takes them.

    .. versionadded:: 0.4
    """

    name: str = attrs.field(default="sim", validator=_name)
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=as_dict, hash=False,
                                             validator=mapping_of(str, object, "a mapping of option names to values"))


@value_object
@attrs.frozen(kw_only=True)
class FloatingIP:
    """An address the active director holds, and moves to its peer on failover.

    Args:
        address: the address with its prefix length (``192.168.2.10/24``).
        interface: the interface it goes on.

    .. versionadded:: 0.4
    """

    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface = attrs.field(
        converter=_as_interface_address, validator=_interface_address)
    interface: str = attrs.field(validator=interface_name)


@value_object
@attrs.frozen(kw_only=True)
class Host:
    """Another host of the deployment (a gateway, a router) and the rules it needs.

    Args:
        name: the host's name, as the deployment calls it.
        rules: its rules (e.g. a gateway's :class:`~lbcore.rules.LoopbackVIP` or
            :class:`~lbcore.rules.Redirect` for DR, a router's policy routes).

    .. versionadded:: 0.4
    """

    name: str = attrs.field(validator=_name)
    rules: tuple[Rule, ...] = attrs.field(default=(), converter=_as_tuple,
                                          validator=[_is_tuple, _tuple_of(*_RULE_TYPES)])


@value_object
@attrs.frozen(kw_only=True)
class Node:
    """One director of an HA pair.

    Args:
        name: the node's name (its hostname, by default what ``lbcore`` matches itself by).
        address: the address the peers speak VRRP and connection sync on.
        priority: VRRP priority (1..254); the higher one is master when both are up.

    .. versionadded:: 0.4
    """

    name: str = attrs.field(validator=_name)
    address: IPAddress = attrs.field(converter=as_address, validator=unicast)
    priority: int = attrs.field(default=100, validator=int_in(1, 254, "a VRRP priority"))


@value_object
@attrs.frozen(kw_only=True)
class HAPair:
    """Two directors sharing the floating IPs (VRRP by keepalived) and, optionally, connections.

    Args:
        nodes: the two nodes.
        interface: the interface VRRP speaks on.
        virtual_router_id: VRRP's router id (1..255), the same on both nodes.
        sync: whether IPVS connection sync runs between them.

    .. versionadded:: 0.4
    """

    nodes: tuple[Node, ...] = attrs.field(converter=_as_tuple, validator=[_is_tuple, _tuple_of(Node)])
    interface: str = attrs.field(validator=interface_name)
    virtual_router_id: int = attrs.field(default=51, validator=int_in(1, 255, "a VRRP router id"))
    sync: bool = attrs.field(default=True, validator=boolean)

    def __attrs_post_init__(self) -> None:
        fields = attrs.fields(HAPair)
        if len(self.nodes) != 2:
            refuse(self, fields.nodes, [n.name for n in self.nodes], "is not two nodes")
        if self.nodes[0].name == self.nodes[1].name:
            refuse(self, fields.nodes, self.nodes[1].name, "names one node twice")


@value_object
@attrs.frozen(kw_only=True)
class DaemonSettings:
    """How ``lbcore run`` keeps the kernel true and reports on it.

    Args:
        interval: seconds between two reconciliations of the kernel with the deployment.
        metrics: ``host:port`` the Prometheus metrics listen on (None: off).
        status: ``host:port`` the status page listens on (None: off).
        control: the path of the control socket.

    .. versionadded:: 0.4
    """

    interval: float = attrs.field(default=10.0, validator=number(0.0))
    metrics: str | None = attrs.field(default=None, validator=_optional_text)
    status: str | None = attrs.field(default=None, validator=_optional_text)
    control: str = attrs.field(default="/run/lbcore.sock", validator=_text)


def _services(inst: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    seen: set[object] = set()
    for item in value:
        if not isinstance(item, (VirtualService, CheckedService)):
            refuse(inst, attribute, item, "is not a VirtualService or CheckedService")
        key = _service_of(item).key
        if key in seen:
            refuse(inst, attribute, str(key), "appears twice")
        seen.add(key)


def _rules(inst: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    seen: set[object] = set()
    for item in value:
        if not isinstance(item, _RULE_TYPES):
            refuse(inst, attribute, item, "is not a rule of lbcore.rules")
        if item.key in seen:
            refuse(inst, attribute, item.text(), "appears twice")
        seen.add(item.key)


def _service_of(item: Service) -> VirtualService:
    return item.service if isinstance(item, CheckedService) else item


@value_object
@attrs.frozen(kw_only=True)
class Deployment:
    """A whole director: services (health-checked or not), rules, timeouts, sysctls, the backend,
    and the parts the open issues carry next (floating IPs, other hosts, an HA pair, the daemon).

    Args:
        services: virtual services; a :class:`~lbcore.health.monitor.CheckedService` for a checked one.
        rules: the netfilter and routing objects of :mod:`lbcore.rules` on the director.
        timeouts: the global timeouts (None: leave the backend's as they are).
        sysctls: the IPVS sysctls (None: leave them as they are).
        backend: which backend carries it out.
        floating_ips: addresses the active director holds.
        hosts: other hosts and their rules.
        ha: the HA pair, when there are two directors.
        daemon: ``lbcore run``'s settings.

    Raises:
        InvalidField: two services or two rules have the same identity, or a part is not of its type.

    .. versionadded:: 0.4
    """

    services: tuple[Service, ...] = attrs.field(default=(), converter=_as_tuple,
                                                validator=[_is_tuple, _services])
    rules: tuple[Rule, ...] = attrs.field(default=(), converter=_as_tuple, validator=[_is_tuple, _rules])
    timeouts: Timeouts | None = attrs.field(
        default=None, validator=optional_instance_of(Timeouts))
    sysctls: Sysctls | None = attrs.field(
        default=None, validator=optional_instance_of(Sysctls))
    backend: BackendChoice = attrs.field(factory=BackendChoice,
                                         validator=instance_of(BackendChoice))
    floating_ips: tuple[FloatingIP, ...] = attrs.field(default=(), converter=_as_tuple,
                                                       validator=[_is_tuple, _tuple_of(FloatingIP)])
    hosts: tuple[Host, ...] = attrs.field(default=(), converter=_as_tuple,
                                          validator=[_is_tuple, _tuple_of(Host)])
    ha: HAPair | None = attrs.field(default=None,
                                    validator=optional_instance_of(HAPair))
    daemon: DaemonSettings | None = attrs.field(
        default=None, validator=optional_instance_of(DaemonSettings))

    @classmethod
    def from_table(cls, table: Table, backend: BackendChoice | None = None) -> Deployment:
        """The deployment of a table (e.g. one read from a backend or an ipvsadm-save dump)."""
        if not isinstance(table, Table):
            raise InvalidField("Deployment", "table", table, "is not a Table")
        return cls(services=tuple(table), rules=tuple((table.rules or {}).values()),
                   timeouts=table.timeouts, sysctls=table.sysctls, backend=backend or BackendChoice())

    def virtual_services(self) -> list[VirtualService]:
        """Every service, checked or not, as the backend holds it when every real server is up."""
        return [_service_of(s) for s in self.services]

    def checked(self) -> list[CheckedService]:
        """The health-checked services."""
        return [s for s in self.services if isinstance(s, CheckedService)]

    def unsupported(self) -> list[Unsupported]:
        """What this deployment asks that no backend carries yet (empty when it can be applied)."""
        backend = self.backend.name
        refusals = []
        for field, reason in (("floating_ips", "floating IPs are not carried out by any backend yet"),
                              ("hosts", "the rules of other hosts are not carried out yet"),
                              ("ha", "an HA pair is not carried out yet"),
                              ("daemon", "the daemon's settings are not carried out yet")):
            if getattr(self, field):
                refusals.append(Unsupported(backend, f"Deployment.{field}", reason))
        return refusals

    def table(self) -> Table:
        """The table a backend should hold: services with every real server up, rules, timeouts, sysctls.

        Raises:
            Unsupported: the deployment asks for something no backend carries yet.
        """
        refusals = self.unsupported()
        if refusals:
            raise refusals[0]
        return Table(self.virtual_services(), timeouts=self.timeouts, sysctls=self.sysctls,
                     rules=self.rules or None)
