"""Health check definitions and the policy that runs them: attrs value objects, validated on construction.

A check says *what* to ask a real server (connect, an HTTP request, a DNS query, ...); the
:class:`Policy` says *how often* and *how many* answers change its state (keepalived's delay_loop,
connect_timeout, retry, delay_before_retry, alpha/omega; haproxy's rise and fall). Every refusal is
an :class:`~lbcore.errors.InvalidField` naming the class, the field and the value.
"""

from __future__ import annotations

import enum
import re
from typing import Any

import attrs

from lbcore._fields import (
    any_port,
    as_address,
    boolean,
    count,
    instance_of,
    int_in,
    member_of,
    number,
    optional_port,
    optional_unicast,
    refuse,
    to_enum,
    unicast,
    value_object,
)
from lbcore.errors import InvalidField
from lbcore.health._regex import Unbounded, compile_pattern
from lbcore.model import IPAddress


class HealthState(str, enum.Enum):
    """Whether a real server answers its check."""

    UP = "up"
    DOWN = "down"

    def __str__(self) -> str:
        return self.value


def _as_state(value: object) -> Any:
    return to_enum(HealthState, value)


def _text(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value or any(c in value for c in "\r\n"):
        refuse(inst, attribute, value, "is not one line of text")


def _optional_text(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _text(inst, attribute, value)


def _regex(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, (str, bytes)):
        refuse(inst, attribute, value, "is not a regular expression")
    try:
        compile_pattern(value)
    except re.error as exc:
        refuse(inst, attribute, value, f"is not a regular expression ({exc})")
    except Unbounded as exc:
        # A backtracking match cannot be preempted: a check's timeout must bound all it does.
        refuse(inst, attribute, value, str(exc))


_optional_seconds = attrs.validators.optional(number(0.0))


@value_object
@attrs.frozen(kw_only=True)
class Policy:
    """How a check runs and how many answers change a real server's state.

    A check starts every ``interval`` seconds (measured from start to start) and fails when no answer
    comes within ``timeout``. A failed attempt is tried again ``retry`` times, ``delay_before_retry``
    seconds after it failed (keepalived); only when every attempt fails does the check count as
    failed. ``fall`` failed checks in a row take an up server down; ``rise`` passed checks in a row
    bring a down server up. So a server that stops answering just after a passed check is down
    ``interval * fall + timeout`` seconds later (with ``retry`` 0). A check that takes longer
    than ``interval`` (timeout or retries) delays the next one until it ends: checks of one real
    server never overlap.

    Args:
        interval: seconds between the starts of two checks (keepalived delay_loop).
        timeout: seconds an attempt may take (keepalived connect_timeout).
        rise: passed checks in a row that bring a down server up.
        fall: failed checks in a row that take an up server down.
        retry: attempts after a failed one, before the check counts as failed.
        delay_before_retry: seconds between a failed attempt and its retry.
        initial: the state before the first check: up, or down (keepalived alpha).
        jitter: the first check starts at a random time in [0, jitter] seconds, so checks spread.

    .. versionadded:: 0.1
    """

    interval: float = attrs.field(default=6.0, validator=number(0.0))
    timeout: float = attrs.field(default=5.0, validator=number(0.0))
    rise: int = attrs.field(default=1, validator=count(1))
    fall: int = attrs.field(default=1, validator=count(1))
    retry: int = attrs.field(default=0, validator=count(0))
    delay_before_retry: float = attrs.field(default=1.0, validator=number(0.0, inclusive=True))
    initial: HealthState = attrs.field(default=HealthState.UP, converter=_as_state, validator=member_of(HealthState))
    jitter: float = attrs.field(default=0.0, validator=number(0.0, inclusive=True))


@value_object
@attrs.frozen(kw_only=True)
class Check:
    """What every check has: where it goes, when not to the real server's own address and port.

    Args:
        address: ask this address instead of the real server's (e.g. the VIP, or a management
            address).
        port: ask this port instead of the real server's.
        timeout: this check's own timeout, instead of the policy's.

    .. versionadded:: 0.1
    """

    address: IPAddress | None = attrs.field(default=None, converter=as_address, validator=optional_unicast)
    port: int | None = attrs.field(default=None, validator=optional_port)
    timeout: float | None = attrs.field(default=None, validator=_optional_seconds)


@value_object
@attrs.frozen(kw_only=True)
class TCPCheck(Check):
    """Up when a TCP connection is established (keepalived TCP_CHECK).

    .. versionadded:: 0.1
    """


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "OPTIONS")


def _method(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in HTTP_METHODS:
        refuse(inst, attribute, value, f"is not one of: {', '.join(HTTP_METHODS)}")


def _path(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _text(inst, attribute, value)
    if not str(value).startswith("/") or " " in str(value):
        refuse(inst, attribute, value, "is not a request path (starts with /, no spaces)")


def _as_statuses(value: object) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return frozenset({value})
    if isinstance(value, (list, tuple, set, frozenset, range)):
        try:
            return frozenset(value)
        except TypeError:  # an unhashable item: the validator names the value
            return value
    return value


def _statuses(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, frozenset) or not value:
        refuse(inst, attribute, value, "is not a set of HTTP status codes")
    assert isinstance(value, frozenset)
    for code in value:
        if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
            refuse(inst, attribute, code, "is not an HTTP status code (100..599)")


@value_object
@attrs.frozen(kw_only=True)
class HTTPCheck(Check):
    """Up when an HTTP(S) request gets an expected status, and a body the regex finds (HTTP_GET, SSL_GET).

    The request is HTTP/1.0 with ``Connection: close``, so the body ends where the connection does.

    Args:
        method: the request method.
        path: the request path, with its query.
        host: the Host header (the virtual host); the target address when None.
        status: the status codes that mean up.
        body: a regular expression searched in the body (decoded as latin-1), or None. It is
            matched with RE2, in time linear in the body, so no pattern can stall the monitor; a
            pattern RE2 refuses (backreferences, lookaround) is an InvalidField.
        https: use TLS.
        sni: the server name sent in the TLS handshake; ``host`` when None.
        verify: check the server's certificate and name against the system's CAs.

    .. versionadded:: 0.1
    """

    method: str = attrs.field(default="GET", validator=_method)
    path: str = attrs.field(default="/", validator=_path)
    host: str | None = attrs.field(default=None, validator=_optional_text)
    status: frozenset[int] = attrs.field(default=frozenset({200}), converter=_as_statuses, validator=_statuses)
    body: str | None = attrs.field(default=None, validator=_regex)
    https: bool = attrs.field(default=False, validator=boolean)
    sni: str | None = attrs.field(default=None, validator=_optional_text)
    verify: bool = attrs.field(default=False, validator=boolean)

    def __attrs_post_init__(self) -> None:
        fields = attrs.fields(HTTPCheck)
        if self.body is not None and not isinstance(self.body, str):
            refuse(self, fields.body, self.body, "is not a str regular expression")
        if not self.https and (self.sni is not None or self.verify):
            refuse(self, fields.sni if self.sni is not None else fields.verify,
                    self.sni if self.sni is not None else self.verify, "is only for https")


def _payload(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bytes) or not value:
        refuse(inst, attribute, value, "is not a non-empty bytes payload")


@value_object
@attrs.frozen(kw_only=True)
class UDPCheck(Check):
    """Up when a datagram sent to the server gets a reply that the regex finds (keepalived UDP_CHECK).

    Args:
        payload: the datagram to send.
        reply: a bytes regular expression searched in the reply (with RE2, as HTTPCheck's body); any reply when None.

    .. versionadded:: 0.1
    """

    payload: bytes = attrs.field(default=b"\n", validator=_payload)
    reply: bytes | None = attrs.field(default=None, validator=_regex)

    def __attrs_post_init__(self) -> None:
        if self.reply is not None and not isinstance(self.reply, bytes):
            refuse(self, attrs.fields(UDPCheck).reply, self.reply, "is not a bytes regular expression")


#: The query types a DNSCheck asks for (RFC 1035, RFC 3596, RFC 2782).
DNS_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33}


def _dns_name(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    labels = value.rstrip(".").split(".") if isinstance(value, str) else []
    if not labels or not all(0 < len(label) <= 63 and label.isascii() for label in labels) or len(str(value)) > 253:
        refuse(inst, attribute, value, "is not a domain name")


def _dns_type(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or value not in DNS_TYPES:
        refuse(inst, attribute, value, f"is not one of: {', '.join(DNS_TYPES)}")


@value_object
@attrs.frozen(kw_only=True)
class DNSCheck(Check):
    """Up when the server answers a query over UDP with NOERROR and at least one answer (DNS_CHECK).

    Args:
        name: the name to ask for.
        type: the record type, e.g. "A", "AAAA", "SOA".

    .. versionadded:: 0.1
    """

    name: str = attrs.field(default="localhost", validator=_dns_name)
    type: str = attrs.field(default="A", validator=_dns_type)


@value_object
@attrs.frozen(kw_only=True)
class SMTPCheck(Check):
    """Up when the server greets with a 220 banner (keepalived SMTP_CHECK); it is then sent QUIT.

    .. versionadded:: 0.1
    """


#: The most data an echo request carries (an IPv4 datagram of 65535 bytes, less 20 of IP and 8 of ICMP).
PING_MAX_SIZE = 65507


_ping_size = int_in(0, PING_MAX_SIZE, "a payload size")


@value_object
@attrs.frozen(kw_only=True)
class PingCheck(Check):
    """Up when the server answers an ICMP (or ICMPv6) echo request (the guide's "ping server").

    A ping asks a host, not a port: ``port`` must stay None, and the probe of a ping has port 0,
    so every service that pings the same address the same way shares one check. The asyncio
    prober uses an unprivileged ICMP socket when ``net.ipv4.ping_group_range`` includes the
    process's group, and a raw socket (CAP_NET_RAW) otherwise.

    Args:
        size: data bytes after the 8-byte ICMP header, as ``ping -s`` (56 gives a 64-byte message).

    .. versionadded:: 0.2
    """

    size: int = attrs.field(default=56, validator=_ping_size)

    def __attrs_post_init__(self) -> None:
        if self.port is not None:
            refuse(self, attrs.fields(PingCheck).port, self.port, "must be None: ICMP has no port")


def _command(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or not value or not all(isinstance(a, str) for a in value):
        refuse(inst, attribute, value, "is not a non-empty sequence of arguments")


def _as_tuple(value: object) -> Any:
    return tuple(value) if isinstance(value, list) else value


@value_object
@attrs.frozen(kw_only=True)
class ExecCheck(Check):
    """Up when a command exits with status 0 in time (keepalived MISC_CHECK); it is killed on timeout.

    ``{address}`` and ``{port}`` in the arguments are replaced by the target's. No shell runs it.

    Args:
        command: the program and its arguments.

    .. versionadded:: 0.1
    """

    command: tuple[str, ...] = attrs.field(default=("true",), converter=_as_tuple, validator=_command)

    def arguments(self, address: IPAddress, port: int) -> list[str]:
        """The command with the target filled in."""
        return [a.replace("{address}", str(address)).replace("{port}", str(port)) for a in self.command]


@value_object
@attrs.frozen(kw_only=True)
class FixedCheck(Check):
    """A check that asks nothing and always gives ``state`` (ldirectord's checktype on and off).

    Useful to take a real server out by configuration, or to keep one in whatever happens.

    Args:
        state: up (on) or down (off).

    .. versionadded:: 0.1
    """

    state: HealthState = attrs.field(default=HealthState.UP, converter=_as_state, validator=member_of(HealthState))


@value_object
@attrs.frozen
class Probe:
    """One check as it runs: a check, its policy and the address and port it asks (0 for a ping).

    Two services that check the same real server the same way share one Probe, and so one check.

    .. versionadded:: 0.1
    """

    check: Check = attrs.field(validator=instance_of(Check))
    policy: Policy = attrs.field(validator=instance_of(Policy))
    address: IPAddress = attrs.field(converter=as_address, validator=unicast)
    port: int = attrs.field(validator=any_port)

    @property
    def timeout(self) -> float:
        """The check's own timeout, or the policy's."""
        return self.check.timeout if self.check.timeout is not None else self.policy.timeout


def probe_for(check: Check, policy: Policy, address: IPAddress, port: int) -> Probe:
    """The probe of ``check`` on a real server at ``address:port`` (the check's overrides win).

    A :class:`PingCheck` probe has port 0, whatever the real server's port.

    Raises:
        InvalidField: the check has no port and the real server's port is 0 (a fwmark service).
    """
    target = check.address if check.address is not None else address
    if isinstance(check, PingCheck):
        return Probe(check, policy, target, 0)  # a host, not a port: one ping per address
    target_port = check.port if check.port is not None else port
    if target_port == 0:
        raise InvalidField(type(check).__name__, "port", None, f"must be set: real server {address} has port 0")
    return Probe(check, policy, target, target_port)
