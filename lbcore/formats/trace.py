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

import math
import re
from collections.abc import Iterable
from typing import Protocol as TypingProtocol
from typing import runtime_checkable

import attrs

from lbcore._fields import address_of, ascii_int
from lbcore.balancer import Balancer
from lbcore.enums import Protocol
from lbcore.errors import InvalidField, ParseError
from lbcore.formats.ipvsadm import parse_command
from lbcore.model import U32_MAX, IPAddress, Sysctls
from lbcore.ops import SetSysctls


@attrs.frozen
class Rules:
    """``<t> rules <ipvsadm command>``."""

    time: float
    command: str
    where: str
    #: The line's number, and the column where the command starts (for a ParseError's position).
    line: int | None = None
    column: int = 1


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
    line: int | None = None
    column: int = 1  # the value's


Event = Rules | Open | Close | Sysctl


#: The latest time a trace may name, 2**40 s (about 35,000 years). Far beyond it, adding the
#: estimator's 2 s to a float time no longer moves it, and a simulated clock would stand still.
MAX_TIME = float(2**40)

#: A trace time as ASCII text: digits with an optional fraction and exponent, no sign (not "inf",
#: "nan", "-5" or a full-width digit, which float() takes).
_TIME = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _endpoint(where: str, field: str, text: str, line: int, column: int) -> tuple[IPAddress, int]:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    address = address_of(host)
    number = ascii_int(port)
    if not sep or address is None or number is None or number > 65535:
        reason = "has a scope id: no backend carries one yet" if "%" in host else "is not an address:port"
        raise ParseError(where, field, text, reason, line=line, column=column)
    return address, number


def _columns(line: str) -> list[int]:
    """The 1-based column of each whitespace-separated word of ``line``."""
    return [m.start() + 1 for m in re.finditer(r"\S+", line)]


def parse_trace(text: str, name: str = "trace") -> list[Event]:
    """Read a trace.

    Times are ASCII decimal numbers of seconds, finite, non-negative and non-decreasing.

    Raises:
        ParseError: a malformed line, named by file and line number (``line``), with the ``column``
            of the refused word.

    .. versionchanged:: 0.4 times must be finite, non-negative and non-decreasing; numbers are
       ASCII digits only; ParseError carries ``line`` and ``column``.
    """
    if not isinstance(text, str):
        raise ParseError(name, "text", text, "is not a str")
    events: list[Event] = []
    previous = 0.0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0]
        if not line.strip():
            continue
        where = f"{name} line {number}"
        columns = _columns(line)

        def error(field: str, value: object, reason: str, word: int, *, _n: int = number,
                  _where: str = where, _columns: list[int] = columns, _end: int = len(raw) + 1) -> ParseError:
            column = _columns[word] if word < len(_columns) else _end
            return ParseError(_where, field, value, reason, line=_n, column=column)

        parts = line.split(None, 2)
        if len(parts) < 2:
            raise error("event", line.strip(), "needs a time and a kind", 0)
        t = float(parts[0]) if _TIME.fullmatch(parts[0]) else math.nan
        if not math.isfinite(t) or t > MAX_TIME:
            raise error("time", parts[0], "is not a finite number of seconds in 0..2**40 (ASCII digits)", 0)
        if t < previous:
            raise error("time", parts[0], f"is before the previous event's time {previous:g}", 0)
        previous = t
        kind, rest = parts[1], parts[2].strip() if len(parts) > 2 else ""
        args = rest.split()
        if kind == "rules":
            events.append(Rules(t, rest, where, number, columns[2] if len(columns) > 2 else len(raw) + 1))
        elif kind == "open":
            if len(args) not in (4, 5):
                raise error("open", rest, "needs <id> <tcp|udp> <cip>:<cport> <vip>:<vport> [mark=<n>]", 2)
            if args[1] not in ("tcp", "udp"):
                raise error("protocol", args[1], "is not tcp or udp", 3)
            caddr, cport = _endpoint(where, "client", args[2], number, columns[4])
            vaddr, vport = _endpoint(where, "virtual", args[3], number, columns[5])
            mark = 0
            if len(args) == 5:
                value = ascii_int(args[4][5:]) if args[4].startswith("mark=") else None
                if value is None or value > U32_MAX:
                    raise error("mark", args[4], f"is not mark=<n> (0..{U32_MAX})", 6)
                mark = value
            events.append(Open(t, args[0], Protocol(args[1]), caddr, cport, vaddr, vport, mark))
        elif kind == "close":
            if len(args) != 1:
                raise error("close", rest, "needs one <id>", 2)
            events.append(Close(t, args[0]))
        elif kind == "sysctl":
            if len(args) != 2:
                raise error("sysctl", rest, "needs <name> <value>", 2)
            events.append(Sysctl(t, args[0], args[1], where, number, columns[3]))
        else:
            raise error("kind", kind, "is not rules, open, close or sysctl", 1)
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
            try:
                ops = parse_command(ev.command, balancer.read(), ev.where, ev.line)
            except ParseError as exc:
                # The command's columns, counted from the start of the trace's line.
                column = None if exc.column is None else exc.column + ev.column - 1
                raise ParseError(exc.owner, exc.field, exc.value, exc.reason, line=exc.line,
                                 column=column) from exc.__cause__
            balancer.execute(ops)
        elif isinstance(ev, Sysctl):
            current = balancer.read().sysctls or Sysctls()
            try:
                sysctls = current.with_value(ev.name, ev.value)
            except InvalidField as exc:
                raise ParseError(ev.where, ev.name, ev.value, exc.reason, line=ev.line, column=ev.column) from exc
            balancer.execute([SetSysctls(sysctls)])
        elif isinstance(ev, Open):
            lines.append(f"{ev.id} {replayer.open(ev) or '-'}")
        else:
            replayer.close(ev)
    return lines
