"""Traces: the contract between the simulator and the kernel (format in docs/design.md).

A trace is one event per line (``#`` starts a comment; times are seconds from the start)::

    <t> rules <ipvsadm command line without "ipvsadm">
    <t> open <id> <tcp|udp> <cip>:<cport> <vip>:<vport> [mark=<n>]
    <t> close <id>
    <t> sysctl <name> <value>

:func:`replay` runs one against any :class:`Replayer`; the rules and sysctl lines always go through
a :class:`~lbcore.balancer.Balancer`, so the simulator and a kernel apply them the same way.

.. versionchanged:: 0.3 moved from ``lbcore.trace``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Protocol as TypingProtocol
from typing import runtime_checkable

import attrs

from lbcore.balancer import Balancer
from lbcore.enums import Protocol
from lbcore.errors import InvalidField, ParseError
from lbcore.formats.ipvsadm import parse_command
from lbcore.model import IPAddress, Sysctls
from lbcore.ops import SetSysctls


@attrs.frozen
class Rules:
    """``<t> rules <ipvsadm command>``."""

    time: float
    command: str
    where: str


@attrs.frozen
class Open:
    """``<t> open <id> <proto> <cip>:<cport> <vip>:<vport> [mark=<n>]``."""

    time: float
    id: str
    protocol: Protocol
    client: IPAddress
    client_port: int
    vip: IPAddress
    vport: int
    mark: int = 0


@attrs.frozen
class Close:
    """``<t> close <id>``."""

    time: float
    id: str


@attrs.frozen
class Sysctl:
    """``<t> sysctl <name> <value>``."""

    time: float
    name: str
    value: str
    where: str


Event = Rules | Open | Close | Sysctl


def _endpoint(where: str, field: str, text: str) -> tuple[IPAddress, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ValueError
        return ipaddress.ip_address(host), int(port)
    except ValueError:
        raise ParseError(where, field, text, "is not an address:port") from None


def parse_trace(text: str, name: str = "trace") -> list[Event]:
    """Read a trace.

    Raises:
        ParseError: a malformed line, named by file and line number.
    """
    events: list[Event] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{name} line {number}"
        parts = line.split(None, 2)
        if len(parts) < 2:
            raise ParseError(where, "event", line, "needs a time and a kind")
        try:
            t = float(parts[0])
        except ValueError:
            raise ParseError(where, "time", parts[0], "is not a number of seconds") from None
        kind, rest = parts[1], parts[2] if len(parts) > 2 else ""
        args = rest.split()
        if kind == "rules":
            events.append(Rules(t, rest, where))
        elif kind == "open":
            if len(args) not in (4, 5):
                raise ParseError(where, "open", rest, "needs <id> <tcp|udp> <cip>:<cport> <vip>:<vport> [mark=<n>]")
            if args[1] not in ("tcp", "udp"):
                raise ParseError(where, "protocol", args[1], "is not tcp or udp")
            caddr, cport = _endpoint(where, "client", args[2])
            vaddr, vport = _endpoint(where, "virtual", args[3])
            mark = 0
            if len(args) == 5:
                if not args[4].startswith("mark=") or not args[4][5:].isdigit():
                    raise ParseError(where, "mark", args[4], "is not mark=<n>")
                mark = int(args[4][5:])
            events.append(Open(t, args[0], Protocol(args[1]), caddr, cport, vaddr, vport, mark))
        elif kind == "close":
            if len(args) != 1:
                raise ParseError(where, "close", rest, "needs one <id>")
            events.append(Close(t, args[0]))
        elif kind == "sysctl":
            if len(args) != 2:
                raise ParseError(where, "sysctl", rest, "needs <name> <value>")
            events.append(Sysctl(t, args[0], args[1], where))
        else:
            raise ParseError(where, "kind", kind, "is not rules, open, close or sysctl")
    return events


class Replayer(TypingProtocol):
    """One side of a replay: the simulator, or real traffic through a kernel."""

    balancer: Balancer

    def wait_until(self, when: float) -> None:
        """Let time pass up to ``when`` seconds from the start of the replay."""
        ...

    def open(self, event: Open) -> str | None:
        """Open the connection; return the ``rip:rport`` that took it, or None."""
        ...

    def close(self, event: Close) -> None:
        """Close the connection ``event.id`` as its client would."""
        ...


@runtime_checkable
class Replayable(TypingProtocol):
    """Optional feature: a backend that replays a trace by itself, on its own clock (the simulator).

    Ask with ``isinstance(backend, Replayable)``. A kernel backend is not: its side of a replay
    needs clients and real servers that send real traffic.

    .. versionadded:: 0.3
    """

    def replayer(self) -> Replayer:
        """A new :class:`Replayer` on this backend, starting now."""
        ...


def replay(events: Iterable[Event], replayer: Replayer) -> list[str]:
    """Run ``events`` in order; return one line per ``open``: ``<id> <rip>:<rport>`` or ``<id> -``.

    Raises:
        ParseError, InvalidField: a bad rules or sysctl line (or another error of
            Balancer.execute); nothing of that line was applied.
    """
    lines = []
    balancer = replayer.balancer
    for ev in events:
        replayer.wait_until(ev.time)
        if isinstance(ev, Rules):
            balancer.execute(parse_command(ev.command, balancer.read(), ev.where))
        elif isinstance(ev, Sysctl):
            current = balancer.read().sysctls or Sysctls()
            try:
                sysctls = current.with_value(ev.name, ev.value)
            except InvalidField as exc:
                raise ParseError(ev.where, ev.name, ev.value, exc.reason) from exc
            balancer.execute([SetSysctls(sysctls)])
        elif isinstance(ev, Open):
            lines.append(f"{ev.id} {replayer.open(ev) or '-'}")
        else:
            replayer.close(ev)
    return lines
