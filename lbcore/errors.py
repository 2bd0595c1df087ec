"""The exception tree of lbcore.

Every error lbcore raises is an :class:`LBError`::

    LBError
      InvalidField(LBError, ValueError)     .owner .field .value .reason
        ParseError                          a foreign format (ipvsadm line, trace) is malformed
          ConfigError                       a deployment file has problems: .problems, each
                                            with file, line, column, path and message
        InvalidArguments(InvalidField, TypeError)  a call's arguments do not fit the class
      Conflict
        ServiceExists
        RealServerExists
        RuleExists
      NotFound(LBError, LookupError)
        ServiceNotFound
        RealServerNotFound
        RuleNotFound
      Unsupported                           .backend .capability .reason
      NotOwned                              the kernel object is not lbcore's to touch
      ProbeFailed                           a real server answered a health check wrongly
      BackendError                          .backend .op; the original error as __cause__
        BackendUnavailable                  missing package, no CAP_NET_ADMIN, no ip_vs,
                                            iptables is the nf_tables variant
        StateUnknown                        a failed apply could not be undone: .applied

Messages name the field and the value, e.g.
``VirtualService.port: 70000 is not a port (0..65535)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple


class LBError(Exception):
    """Base class of every error lbcore raises."""


class InvalidField(LBError, ValueError):
    """A field has a value that lbcore (or the kernel) refuses.

    Attributes:
        owner: the class or format the field belongs to, e.g. ``"VirtualService"``.
        field: the field's name, e.g. ``"port"``.
        value: the refused value.
        reason: why it is refused, e.g. ``"is not a port (1..65535)"``.
    """

    def __init__(self, owner: str, field: str, value: Any, reason: str) -> None:
        self.owner = owner
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{owner}.{field}: {value!r} {reason}")


class InvalidArguments(InvalidField, TypeError):
    """A class was called with arguments it does not take: a required field missing, a keyword-only
    field given by position, an unknown keyword or one given twice.

    ``field`` names the field, ``value`` the value given for it (None when it is missing), e.g.
    ``Redirect.protocol: 'tcp' is given by position, but protocol, port are keyword-only: write
    Redirect(..., protocol='tcp', port=8080)``.

    .. versionadded:: 0.2
    """

    def __init__(self, owner: str, field: str, value: Any, reason: str, *, missing: bool = False) -> None:
        super().__init__(owner, field, value, reason)
        if missing:  # no value to show
            self.args = (f"{owner}.{field}: {reason}",)


class ParseError(InvalidField):
    """A line of a foreign format (ipvsadm rules, a trace) cannot be read.

    ``owner`` names the format and line (``"ipvsadm line 3"``), ``field`` the option or token.

    Attributes:
        line: the 1-based line number, when the text has lines (else None).
        column: the 1-based column of the refused token within its line, when known (else None).

    .. versionchanged:: 0.4 ``line`` and ``column``.
    """

    def __init__(self, owner: str, field: str, value: Any, reason: str, *, line: int | None = None,
                 column: int | None = None) -> None:
        super().__init__(owner, field, value, reason)
        self.line = line
        self.column = column
        if column is not None:
            self.args = (f"{self.args[0]} (column {column})",)


class ConfigProblem(NamedTuple):
    """One problem of a deployment file, where it is and what it is.

    ``file`` is the file's name as the loader was given it; ``line`` and ``column`` count from 1;
    ``path`` is the field's path in the document, e.g. ``services[0].real_servers[2].weight`` (""
    for the document as a whole); ``message`` says what is wrong, e.g. ``70000 is not a weight
    (0..2147483647)``.

    .. versionadded:: 0.4
    """

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(ParseError):
    """A deployment file cannot be read: every problem found in it, at once.

    ``str()`` gives one line per problem, ``file:line:column: path: message``, in the order of the
    file. ``owner``, ``field``, ``value`` and ``reason`` describe the first problem.

    Attributes:
        problems: the problems, as :class:`ConfigProblem` values, sorted by line and column.

    .. versionadded:: 0.4
    """

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line, p.column, p.path, p.message))
        if not self.problems:
            self.problems = [ConfigProblem("<string>", 1, 1, "", "has a problem lbcore did not name")]
        first = self.problems[0]
        super().__init__(first.file, first.path, None, first.message)
        self.args = ("\n".join(str(p) for p in self.problems),)

    def __str__(self) -> str:
        return str(self.args[0])


class Conflict(LBError):
    """The change would create something that already exists."""


class ServiceExists(Conflict):
    """A virtual service with this identity exists already."""


class RealServerExists(Conflict):
    """The virtual service already has a real server with this address and port."""


class RuleExists(Conflict):
    """A rule with this key (see :mod:`lbcore.rules`) exists already.

    .. versionadded:: 0.2
    """


class NotFound(LBError, LookupError):
    """The change refers to something that does not exist."""


class ServiceNotFound(NotFound):
    """No virtual service has this identity."""


class RealServerNotFound(NotFound):
    """The virtual service has no real server with this address and port."""


class RuleNotFound(NotFound):
    """No rule has this key, or the one that has it differs from the one to delete.

    .. versionadded:: 0.2
    """


class Unsupported(LBError):
    """A backend cannot express the request; nothing was changed.

    Attributes:
        backend: the backend's name, e.g. ``"iptables"``.
        capability: the capability it lacks.
        reason: why, in the operator's words.
    """

    def __init__(self, backend: str, capability: object, reason: str) -> None:
        self.backend = backend
        self.capability = capability
        self.reason = reason
        super().__init__(f"backend {backend!r} does not support {capability}: {reason}")


class NotOwned(LBError):
    """The object exists in the kernel but belongs to someone else; lbcore leaves it alone."""


class ProbeFailed(LBError):
    """A real server answered a health check, but not as the check expects (or could not be asked).

    The prober records it as a failed probe; it reaches a user only from a prober called directly.

    .. versionchanged:: 0.3 in the tree (it was an ``Exception`` of :mod:`lbcore.health.probers`).
    """


class BackendError(LBError):
    """The backend failed while carrying out an op; the original error is ``__cause__``.

    Attributes:
        backend: the backend's name.
        op: the op that failed, or None.
        errno: the kernel's errno, when there is one.
    """

    def __init__(
        self, backend: str, message: str, op: object = None, errno: int | None = None
    ) -> None:
        self.backend = backend
        self.op = op
        self.errno = errno
        super().__init__(f"{backend}: {message}")


class BackendUnavailable(BackendError):
    """The backend cannot be used here: a package, a privilege or a kernel module is missing."""


class StateUnknown(BackendError):
    """An apply failed part-way and undoing what it had done failed too.

    The backend holds neither the old state nor the new one. ``applied`` lists the ops that took
    effect and were not undone, in order; the next apply (which plans from a fresh read) converges.

    Attributes:
        applied: the ops in effect.
    """

    def __init__(self, backend: str, message: str, applied: Sequence[object], op: object = None,
                 errno: int | None = None) -> None:
        self.applied = list(applied)
        listed = "; ".join(str(a) for a in applied) or "nothing"
        super().__init__(backend, f"{message}; state unknown, in effect: {listed}", op, errno)
