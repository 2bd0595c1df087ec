"""Save a simulated data plane's state in place, and put it back: the sim's undo for a failed commit.

A commit that fails halfway must leave the data plane exactly as it was, including the objects
that callers and connection entries hold (a dest is referenced by its service, its scheduler and
every entry bound to it). So nothing is replaced by a copy: every mutable object reachable from
the root keeps its identity, and :func:`restore` puts back the attribute values and container
contents that :func:`save` recorded, object by object.

The cost is the size of what the change can touch (the services it names, with their dests and
scheduler tables; the trash), plus one shallow copy of each container named ``shallow`` (the
connection tables, the timer heap, the director's indexes of services): the entries themselves are
not walked, since a control-plane change does not alter an entry's fields (packets and timers do,
and they run outside a commit), nor are the services the change does not name. A deep copy of the
whole director would cost a copy of every entry on every apply.
"""

from __future__ import annotations

import enum
import ipaddress
import random
import types
from collections.abc import Iterable
from typing import Any

_LEAVES = (str, bytes, int, float, complex, bool, type(None), enum.Enum, ipaddress.IPv4Address,
           ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network, range,
           types.FunctionType, types.MethodType, types.BuiltinFunctionType, types.ModuleType, type)
_UNSET = object()  # a slot that had no value


def _slots(cls: type) -> list[str]:
    names: list[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    return [n for n in names if n not in ("__dict__", "__weakref__")]


Saved = list[tuple[Any, Any]]


def save(roots: Iterable[object], opaque: tuple[type, ...] = (), shallow: Iterable[object] = ()) -> Saved:
    """Record the state of every mutable object reachable from ``roots``.

    Args:
        roots: where the walk starts; each is recorded and walked, whatever its type.
        opaque: types whose other instances are neither recorded nor walked (connection
            entries; services the change does not touch).
        shallow: containers whose contents are recorded but not walked.

    Returns:
        What :func:`restore` takes; it holds references, not copies, of the objects.
    """
    shallow_ids = {id(c) for c in shallow}
    seen: set[int] = set()
    out: Saved = []
    stack: list[Any] = list(roots)
    root_ids = {id(r) for r in stack}
    while stack:
        x = stack.pop()
        if isinstance(x, _LEAVES) or id(x) in seen or (isinstance(x, opaque) and id(x) not in root_ids):
            continue
        seen.add(id(x))
        walk = id(x) not in shallow_ids
        if isinstance(x, list):
            out.append((x, list(x)))
            children: Iterable[Any] = x
        elif isinstance(x, dict):
            out.append((x, dict(x)))  # a plain dict keeps the order, and copies without a tuple per item
            children = x.values()
        elif isinstance(x, set):
            out.append((x, set(x)))
            children = x
        elif isinstance(x, (tuple, frozenset)):
            children = x
        elif isinstance(x, random.Random):
            out.append((x, x.getstate()))
            children = ()
        else:
            state = dict(vars(x)) if hasattr(x, "__dict__") else {}
            for name in _slots(type(x)):
                state[name] = getattr(x, name, _UNSET)
            out.append((x, state))
            children = state.values()
        if walk:
            stack.extend(c for c in children if not isinstance(c, _LEAVES) and id(c) not in seen)
    return out


def restore(saved: Saved) -> None:
    """Put back every object's state as :func:`save` recorded it, in place."""
    for x, state in saved:
        if isinstance(x, list):
            x[:] = state
        elif isinstance(x, (dict, set)):
            x.clear()
            x.update(state)
        elif isinstance(x, random.Random):
            x.setstate(state)
        else:
            for name, value in state.items():
                current = getattr(x, name, _UNSET)
                if current is value:
                    continue  # unchanged (and frozen attrs objects are never changed)
                if value is _UNSET:
                    object.__delattr__(x, name)
                else:
                    object.__setattr__(x, name, value)
            if hasattr(x, "__dict__"):
                for name in [n for n in vars(x) if n not in state]:
                    object.__delattr__(x, name)  # an attribute the failed commit added
