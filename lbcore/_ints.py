"""The kernel's fixed-width integer arithmetic, where a result depends on it.

Private; its names are public so that the modules that mirror kernel code share one copy.
"""

from __future__ import annotations


def i32(value: int) -> int:
    """``value`` as a C ``int`` holds it: the low 32 bits, two's complement (overflow wraps)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value
