"""The netfilter and routing side of a deployment, as objects: what feeds and surrounds IPVS.

A virtual service is half of a deployment. The other half is written today into firewall scripts
and rc.local: the MARK rules that feed a firewall-mark service, Auto-NAT for the real servers'
outbound traffic, the REDIRECT that solves DR's ARP problem on a real server, and the policy
routing of a transparent proxy. lbcore owns each of these as one value object, a *rule*, held in
``Table.rules`` by its ``key`` and changed with :class:`~lbcore.ops.AddRule` and
:class:`~lbcore.ops.DeleteRule`, through the same plan/check/apply path as services.

Every rule has a one-line text form (its ``text()``, read back by :func:`rule_from_text`). Backends that keep
rules in the kernel store it beside the rule (the iptables backend in a comment match), so reading
the state back never has to reverse-engineer netfilter's own encoding.

.. versionadded:: 0.2
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

import attrs

from lbcore._fields import ascii_int, int_in, interface_name, optional_port, refuse, to_enum, value_object
from lbcore.enums import Protocol
from lbcore.errors import InvalidField, ParseError
from lbcore.model import U32_MAX, IPAddress

IPv4Network = ipaddress.IPv4Network

#: The routing protocol number lbcore stamps on the ip rules and routes it owns (``proto 219``),
#: as keepalived stamps its own (18): what carries it is lbcore's, and nothing else is touched.
RTPROT_LBCORE = 219

#: Protocols whose rules may name ports.
_PORTED = frozenset({Protocol.TCP, Protocol.UDP, Protocol.SCTP})


def _as_networks(value: object) -> object:
    """Text, addresses or networks to a sorted tuple of IPv4 networks; other values pass through."""
    items = [value] if isinstance(value, (str, ipaddress.IPv4Address, IPv4Network)) else value
    if not isinstance(items, Iterable) or isinstance(items, (bytes, dict)):
        return value
    items = list(items)
    if not all(isinstance(v, (str, ipaddress.IPv4Address, IPv4Network)) for v in items):
        return value  # an int (or a bool) is not a network a user writes
    try:
        return tuple(sorted({ipaddress.IPv4Network(v) for v in items}))
    except (ValueError, TypeError):
        return value


def _networks(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, IPv4Network) for v in value):
        refuse(inst, attribute, value, "is not a list of IPv4 networks (host bits clear)")


def _as_protocols(value: object) -> object:
    items = [value] if isinstance(value, (str, Protocol)) else value
    if not isinstance(items, Iterable):
        return value
    try:
        return frozenset(Protocol(v) for v in items)
    except ValueError:
        return value


def _as_protocol(value: object) -> object:
    return to_enum(Protocol, value)


def _tcp_or_udp(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in (Protocol.TCP, Protocol.UDP):
        refuse(inst, attribute, value, "is not tcp or udp")


def _protocols(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, frozenset) or not all(isinstance(v, Protocol) for v in value):
        refuse(inst, attribute, value, "is not a set of protocols (tcp, udp, sctp)")


def _as_ports(value: object) -> object:
    items = [value] if isinstance(value, int) else value
    if isinstance(items, Iterable) and not isinstance(items, str):
        items = list(items)
        if all(isinstance(p, int) and not isinstance(p, bool) for p in items):
            return tuple(sorted(set(items)))
    return value


def _ports(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or not all(1 <= p <= 65535 for p in value):
        refuse(inst, attribute, value, "is not a list of ports (1..65535)")


def _as_ipv4(value: object) -> object:
    if isinstance(value, str):
        try:
            return ipaddress.IPv4Address(value)
        except ValueError:
            return value
    return value


def _optional_ipv4(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, ipaddress.IPv4Address):
        refuse(inst, attribute, value, "is not an IPv4 address")


def _interface(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    interface_name(inst, attribute, value)
    assert isinstance(value, str)
    # iptables reads a trailing '+' as a wildcard and a leading '!' as a negation.
    if "!" in value or "+" in value:
        refuse(inst, attribute, value, "is not an interface name (no '!' or '+': iptables reads them as operators)")


def _join(values: Iterable[object]) -> str:
    return ",".join(str(v) for v in values)


@value_object
@attrs.frozen
class FirewallMark:
    """The MARK rules that feed a firewall-mark service: which packets get ``mark``.

    A packet is marked when it matches every field that is set: one of ``protocols`` (empty:
    every protocol), one of ``ports`` (destination ports; needs tcp, udp or sctp), one of
    ``destinations`` and one of ``sources`` (empty: any), and none of ``except_destinations``.
    Marks are applied in ascending order of ``mark`` and MARK does not stop the traversal, so
    where two FirewallMarks match one packet, the higher mark wins; the simulator classifies
    packets the same way.

    The guide's transparent proxy is ``FirewallMark(1, "tcp", ports=(80, 443))``; its "forward ALL
    traffic" variant is ``FirewallMark(1, ("tcp", "udp"), except_destinations=[director])`` beside
    ``FirewallMark(2, destinations=[director])``.

    Args:
        mark: the mark (1..4294967295), the fwmark of the service it feeds.
        protocols: tcp, udp, sctp (empty: every protocol).
        ports: destination ports (needs protocols).
        destinations: destination networks (empty: any).
        sources: source networks (empty: any).
        except_destinations: destination networks never marked (e.g. the director's own).

    .. versionadded:: 0.2
    """

    mark: int = attrs.field(validator=int_in(1, U32_MAX, "a firewall mark"))
    protocols: frozenset[Protocol] = attrs.field(
        default=frozenset(), converter=_as_protocols, validator=_protocols
    )
    ports: tuple[int, ...] = attrs.field(default=(), converter=_as_ports, validator=_ports, kw_only=True)
    destinations: tuple[IPv4Network, ...] = attrs.field(
        default=(), converter=_as_networks, validator=_networks, kw_only=True
    )
    sources: tuple[IPv4Network, ...] = attrs.field(
        default=(), converter=_as_networks, validator=_networks, kw_only=True
    )
    except_destinations: tuple[IPv4Network, ...] = attrs.field(
        default=(), converter=_as_networks, validator=_networks, kw_only=True
    )

    def __attrs_post_init__(self) -> None:
        if self.ports and (not self.protocols or not self.protocols <= _PORTED):
            refuse(self, attrs.fields(FirewallMark).ports, self.ports,
                    "needs protocols, each of tcp, udp or sctp")

    @property
    def key(self) -> tuple[str, int]:
        """One FirewallMark per mark value."""
        return ("mark", self.mark)

    def matches(self, protocol: Protocol, source: IPAddress, destination: IPAddress, port: int) -> bool:
        """Whether a packet with these headers gets this mark."""
        return (
            (not self.protocols or protocol in self.protocols)
            and (not self.ports or port in self.ports)
            and (not self.destinations or any(destination in n for n in self.destinations))
            and (not self.sources or any(source in n for n in self.sources))
            and not any(destination in n for n in self.except_destinations)
        )

    def text(self) -> str:
        """The rule's one-line text form, e.g. ``mark 1 proto=tcp ports=80,443``."""
        return _text(f"mark {self.mark}", proto=_join(sorted(self.protocols)), ports=_join(self.ports),
                     dst=_join(self.destinations), src=_join(self.sources),
                     exceptdst=_join(self.except_destinations))


@value_object
@attrs.frozen
class AutoNat:
    """Auto-NAT: real servers' outbound traffic leaves with the director's address.

    Masquerades (or, with ``to_source``, SNATs to that address) packets from ``sources`` (empty:
    any) that leave through ``out_interface``: the guide's NAT options 1B and 1C.

    Args:
        out_interface: the interface the traffic leaves by.
        sources: the real servers' networks (empty: any source).
        to_source: SNAT to this address instead of masquerading.

    .. versionadded:: 0.2
    """

    out_interface: str = attrs.field(validator=_interface)
    sources: tuple[IPv4Network, ...] = attrs.field(
        default=(), converter=_as_networks, validator=_networks
    )
    to_source: ipaddress.IPv4Address | None = attrs.field(
        default=None, converter=_as_ipv4, validator=_optional_ipv4, kw_only=True
    )

    @property
    def key(self) -> tuple[str, str]:
        """One Auto-NAT per outbound interface."""
        return ("auto-nat", self.out_interface)

    def text(self) -> str:
        """The one-line text form, e.g. ``auto-nat eth0 src=10.0.0.0/24``."""
        return _text(f"auto-nat {self.out_interface}", src=_join(self.sources),
                     to=self.to_source or "")


@value_object
@attrs.frozen
class Redirect:
    """A REDIRECT to the host itself, for a real server.

    ``Redirect(vip)`` is DR's answer to the ARP problem: the real server accepts traffic for the
    VIP without holding it (nat PREROUTING ``-d VIP -p tcp -j REDIRECT``). ``Redirect(None,
    port=80, to_port=8080)`` is the transparent-mode redirect of a proxy.

    Args:
        destination: the VIP to accept as the host's own; None for any destination.
        protocol: tcp or udp.
        port: only this destination port (needed without a destination).
        to_port: redirect to this port instead of the packet's own.

    .. versionadded:: 0.2
    """

    destination: ipaddress.IPv4Address | None = attrs.field(
        converter=_as_ipv4, validator=_optional_ipv4
    )
    protocol: Protocol = attrs.field(
        default=Protocol.TCP, converter=_as_protocol, validator=_tcp_or_udp, kw_only=True
    )
    port: int | None = attrs.field(default=None, validator=optional_port, kw_only=True)
    to_port: int | None = attrs.field(default=None, validator=optional_port, kw_only=True)

    def __attrs_post_init__(self) -> None:
        fields = attrs.fields(Redirect)
        if self.destination is None and self.port is None:
            refuse(self, fields.destination, None, "must be set unless port is")

    @property
    def key(self) -> tuple[str, str, str, int]:
        """One redirect per (destination, protocol, port)."""
        return ("redirect", str(self.destination or ""), self.protocol.value, self.port or 0)

    def text(self) -> str:
        """The one-line text form, e.g. ``redirect dst=192.0.2.10 proto=tcp``."""
        return _text("redirect", dst=self.destination or "", proto=self.protocol.value,
                     port=self.port or "", to=self.to_port or "")


@value_object
@attrs.frozen
class PolicyRoute:
    """Policy routing of marked packets: ``ip rule add fwmark M table T`` and the table's route.

    Without ``via``, the table routes everything to the host itself (``ip route add local
    0.0.0.0/0 dev lo table T``): the guide's transparent proxy. With ``via``, it routes through
    that gateway: the guide's router sending client traffic via the load balancer.

    Args:
        mark: the firewall mark the rule matches.
        table: the routing table (1..252) it looks up.
        via: the gateway that table routes through; None delivers locally.

    .. versionadded:: 0.2
    """

    mark: int = attrs.field(validator=int_in(1, U32_MAX, "a firewall mark"))
    table: int = attrs.field(validator=int_in(1, 252, "a routing table (not main, local, default)"))
    via: ipaddress.IPv4Address | None = attrs.field(
        default=None, converter=_as_ipv4, validator=_optional_ipv4, kw_only=True
    )

    @property
    def key(self) -> tuple[str, int]:
        """One policy route per mark."""
        return ("policy-route", self.mark)

    def text(self) -> str:
        """The one-line text form, e.g. ``policy-route 1 table=100``."""
        return _text(f"policy-route {self.mark}", table=self.table, via=self.via or "")


@value_object
@attrs.frozen
class LoopbackVIP:
    """A real server's VIP on ``lo``, with ARP kept quiet about it: the guide's other answer to DR's
    ARP problem, beside :class:`Redirect`.

    The address goes on ``lo`` as a /32 (``ip addr add VIP/32 dev lo``, stamped with routing
    protocol 219); ``net.ipv4.conf.all.arp_ignore`` is raised to 1 and ``arp_announce`` to 2, so
    the host answers ARP only for addresses of the interface asked, and never announces the VIP.
    The two sysctls are raised, never lowered, and left as they are when the VIP goes: other
    VIPs, and other tools, may rely on them. The address is known as lbcore's by its protocol
    (IFA_PROTO), which Linux keeps since 5.18.

    Args:
        address: the VIP.

    .. versionadded:: 0.2
    """

    address: ipaddress.IPv4Address = attrs.field(converter=_as_ipv4, validator=_optional_ipv4)

    def __attrs_post_init__(self) -> None:
        if self.address is None:
            refuse(self, attrs.fields(LoopbackVIP).address, None, "is not an IPv4 address")

    @property
    def key(self) -> tuple[str, str]:
        """One per address."""
        return ("loopback-vip", str(self.address))

    def text(self) -> str:
        """The one-line text form, e.g. ``loopback-vip 192.0.2.10``."""
        return f"loopback-vip {self.address}"


Rule = FirewallMark | AutoNat | Redirect | PolicyRoute | LoopbackVIP
RuleKey = tuple[Any, ...]


def _text(head: str, **fields: object) -> str:
    return " ".join([head, *(f"{k}={v}" for k, v in fields.items() if v != "")])


def rule_from_text(text: str) -> Rule:
    """Read a rule back from the one-line form its ``text()`` gives.

    Raises:
        ParseError: the text is not a rule lbcore wrote; ``column`` points at the word.
    """
    if not isinstance(text, str):
        raise ParseError("rule", "text", text, "is not a str")
    words = text.split()
    if not words:
        raise ParseError("rule", "text", text, "is empty", line=1, column=1)
    columns: list[int] = []
    at = 0
    for word in words:
        at = text.index(word, at)
        columns.append(at + 1)
        at += len(word)
    head, rest = words[0], words[1:]
    positional = [(w, c) for w, c in zip(rest, columns[1:]) if "=" not in w]
    fields = {w.split("=", 1)[0]: (w.split("=", 1)[1], c) for w, c in zip(rest, columns[1:]) if "=" in w}

    def error(field: str, value: object, reason: str, column: int) -> ParseError:
        return ParseError("rule", field, value, reason, line=1, column=column)

    def number(field: str, word: tuple[str, int]) -> int:
        value = ascii_int(word[0])
        if value is None:
            raise error(field, word[0], "is not a number (ASCII digits)", word[1])
        return value

    def first() -> tuple[str, int]:
        if not positional:
            raise error("text", text, f"needs a value after {head!r}", len(text) + 1)
        return positional[0]

    def text_of(name: str) -> str | None:
        return fields[name][0] if name in fields else None

    def listed(name: str) -> list[str]:
        return fields[name][0].split(",") if name in fields else []

    try:
        if head == "mark":
            ports = [number("ports", (p, fields["ports"][1])) for p in listed("ports")]
            return FirewallMark(number("mark", first()), listed("proto"), ports=ports,
                                destinations=listed("dst"), sources=listed("src"),
                                except_destinations=listed("exceptdst"))
        if head == "auto-nat":
            return AutoNat(first()[0], listed("src"), to_source=text_of("to"))
        if head == "redirect":
            return Redirect(text_of("dst"), protocol=text_of("proto") or "tcp",
                            port=number("port", fields["port"]) if "port" in fields else None,
                            to_port=number("to", fields["to"]) if "to" in fields else None)
        if head == "loopback-vip":
            return LoopbackVIP(first()[0])
        if head == "policy-route":
            if "table" not in fields:
                raise error("table", None, "is missing", len(text) + 1)
            return PolicyRoute(number("mark", first()), number("table", fields["table"]), via=text_of("via"))
    except ParseError:
        raise
    except InvalidField as exc:
        column = next((c for w, c in zip(words, columns) if exc.value is not None and str(exc.value) in w), 1)
        raise error(f"{exc.owner}.{exc.field}", exc.value, exc.reason, column) from exc
    raise error("text", text, f"has an unknown kind {head!r}", 1)


def firewall_mark(marks: Iterable[FirewallMark], protocol: Protocol, source: IPAddress,
                  destination: IPAddress, port: int) -> int:
    """The mark a packet leaves mangle PREROUTING with: the highest matching mark, or 0."""
    found = 0
    for fm in marks:
        if fm.mark > found and fm.matches(protocol, source, destination, port):
            found = fm.mark
    return found
