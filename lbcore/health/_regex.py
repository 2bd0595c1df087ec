"""Body and reply patterns of health checks, matched in time linear in the text.

A backtracking engine (Python's ``re``) can take exponential time: ``^(a+)+$`` against 25 bytes
stalled the monitor's loop for seconds, and a check's timeout cannot preempt a running match. RE2
(google-re2) matches in linear time, so a check's pattern is compiled with it, and a pattern RE2
refuses (backreferences, lookaround) is refused when the check is made, with RE2's reason.

Without google-re2 installed, a pattern is taken only where Python's ``re`` is provably bounded:
at most one unbounded repeat, of a single character or character class, and no backreference or
lookaround; then a search costs at most quadratic time in the text. Anything else is refused,
naming the missing package.

Private to lbcore.health; its names are public so that the modules of lbcore.health share them.
"""

from __future__ import annotations

import functools
import importlib
import re
from typing import Any, Protocol

try:
    _re2: Any = importlib.import_module("re2")
except ImportError:  # pragma: no cover - the fallback is tested by forcing it
    _re2 = None

try:  # Python 3.11 names the parser re._parser; older ones sre_parse.
    _parser: Any = importlib.import_module("re._parser")
except ImportError:  # pragma: no cover
    _parser = importlib.import_module("sre_parse")


class Matcher(Protocol):
    """A compiled pattern: ``search(text)`` returns a match or None."""

    def search(self, text: Any) -> object | None: ...


class Unbounded(ValueError):
    """The pattern cannot be matched in bounded time here; the message says why."""


def compile_pattern(pattern: str | bytes, *, use_re2: bool | None = None) -> Matcher:
    """Compile ``pattern`` with RE2 (linear time), or with ``re`` where a search is provably bounded.

    ``use_re2`` forces the choice (None: RE2 when installed); the tests use it to run the fallback.

    Raises:
        Unbounded: RE2 refuses the pattern, or (without RE2) ``re`` could take more than quadratic time.
        re.error: the pattern is not a regular expression at all.
    """
    re.compile(pattern)  # the same syntax errors, and messages, with or without RE2
    if use_re2 is None:
        use_re2 = _re2 is not None
    if use_re2:
        if _re2 is None:
            raise Unbounded("needs google-re2 (pip install google-re2)")
        options = _re2.Options()
        options.log_errors = False  # RE2 logs refusals to stderr; the refusal is the InvalidField
        options.max_mem = 8 << 20
        try:
            return _re2.compile(pattern, options)  # type: ignore[no-any-return]
        except _re2.error as exc:
            reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
            raise Unbounded(f"cannot be matched in linear time (RE2: {reason})") from None
    unbounded = _unbounded_repeats(_parser.parse(pattern))
    if unbounded > 1:
        raise Unbounded("has more than one unbounded repeat, or one of more than a single character; "
                        "install google-re2 to use it")
    return re.compile(pattern)


@functools.lru_cache(maxsize=256)
def matcher(pattern: str | bytes) -> Matcher:
    """:func:`compile_pattern`'s matcher for a pattern a check took already (cached: checks repeat).

    Raises:
        Unbounded: as :func:`compile_pattern` (not for a pattern a check took).
    """
    return compile_pattern(pattern)


def _unbounded_repeats(items: Any) -> int:
    """How many unbounded repeats ``items`` holds; more than one where a repeat is not of one character."""
    found = 0
    for op, arg in items:
        name = str(op)
        if name in ("GROUPREF", "GROUPREF_EXISTS", "ASSERT", "ASSERT_NOT"):
            return 2  # backtracking into these is not bounded by the argument below
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            _low, high, body = arg
            inner = list(body)
            if high == _parser.MAXREPEAT or high > 1000:
                single = len(inner) == 1 and str(inner[0][0]) in ("LITERAL", "NOT_LITERAL", "ANY", "IN")
                found += 1 if single else 2
            else:
                found += _unbounded_repeats(inner) * (2 if _unbounded_repeats(inner) else 1)
        elif name == "SUBPATTERN":
            found += _unbounded_repeats(arg[-1])
        elif name == "BRANCH":
            found += sum(_unbounded_repeats(branch) for branch in arg[1])
        elif name == "ATOMIC_GROUP":
            found += _unbounded_repeats(arg)
    return found
