"""Clocks: lbcore never reads the time itself; it asks the clock it was given."""

from __future__ import annotations

import math
import time
from typing import Protocol

from lbcore.errors import InvalidField


class Clock(Protocol):
    """A source of monotonic time in seconds."""

    def now(self) -> float:
        """Seconds since an arbitrary, fixed start."""
        ...


class SystemClock:
    """The host's monotonic clock, for production.

    .. versionadded:: 0.1
    """

    def now(self) -> float:
        """Seconds from time.monotonic()."""
        return time.monotonic()


class VirtualClock:
    """A clock that moves only when told to, for simulations and tests.

    .. versionadded:: 0.1
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        """The virtual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``.

        Raises:
            InvalidField: ``seconds`` is negative (virtual time never runs backwards), or not a
                finite number.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise InvalidField("VirtualClock", "seconds", seconds, "is not a finite number of seconds")
        if seconds < 0:
            raise InvalidField("VirtualClock", "seconds", seconds, "is negative")
        self._now += seconds

    def set(self, when: float) -> None:
        """Move forward to ``when``.

        Raises:
            InvalidField: ``when`` is in the past, or not a finite number.
        """
        if isinstance(when, bool) or not isinstance(when, (int, float)) or not math.isfinite(when):
            raise InvalidField("VirtualClock", "when", when, "is not a finite number of seconds")
        if when < self._now:
            raise InvalidField("VirtualClock", "when", when, f"is before now ({self._now})")
        self._now = float(when)
