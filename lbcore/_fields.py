"""The field checks and converters every attrs class of lbcore shares: one piece of code each.

A validator refuses with :class:`~lbcore.errors.InvalidField` naming the class, the field and the
value; a converter turns what a user may write (text, an int) into the field's type and leaves
anything else as it is, for the validator to name. :func:`value_object` does the same for a
call's arguments (a missing field, a keyword-only one given by position, an unknown keyword), and
gives the class a repr in the words a user writes.

The module is private; its names are public so that the modules of lbcore share them.
"""

from __future__ import annotations

import enum
import functools
import inspect
import ipaddress
import math
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

import attrs

from lbcore.errors import InvalidArguments, InvalidField

#: An attrs validator: ``check(instance, attribute, value)`` raises, or returns None.
Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

_C = TypeVar("_C", bound=type)


def refuse(inst: object, attribute: attrs.Attribute[Any], value: object, reason: str) -> NoReturn:
    """Raise InvalidField naming ``inst``'s class, the field and the value.

    Raises:
        InvalidField: always.
    """
    raise InvalidField(type(inst).__name__, attribute.name, value, reason)


def ascii_int(text: object) -> int | None:
    """The int that ``text`` spells in ASCII digits (``"080"`` is 80), or None.

    ``str.isdigit()`` and ``int()`` take any Unicode digit (superscript two, Arabic-Indic or full-width digits); the
    kernel's tools and lbcore's formats take ASCII only, so everything else is refused here, once.
    """
    if isinstance(text, str) and text and text.isascii() and text.isdigit():
        return int(text)
    return None


def address_of(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``text`` spells, or None: also for an IPv6 scope id (``fe80::1%eth0``), which no
    backend carries yet (the ipvs codec would drop it), and for non-ASCII text.
    """
    if not text.isascii() or "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def as_address(value: object) -> object:
    """Convert text (or an int) to an IP address; leave anything else for the validator to name."""
    if isinstance(value, str) and not value.isascii():
        return value
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            return value
    return value


def interface_name(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Refuse anything but a link name the kernel takes: 1..15 bytes of ASCII (IFNAMSIZ is 16 with
    the NUL), no NUL, ``/``, ``:`` or whitespace (dev_valid_name() refuses '/', ':' and spaces; a NUL
    would end the name early, so what is read back differs), and not ``.`` or ``..``.
    """
    if (not isinstance(value, str) or not value.isascii() or not 1 <= len(value) <= 15
            or value in (".", "..") or not value.isprintable()
            or any(c.isspace() or c in "/:" for c in value)):
        refuse(inst, attribute, value, "is not an interface name (1..15 printable ASCII characters, "
               "no '/', ':' or spaces)")


def to_enum(enum_type: type[Any], value: object) -> Any:
    """The member of ``enum_type`` for ``value``; anything else is left for the validator to name."""
    try:
        return enum_type(value)
    except ValueError:
        return value


def unicast(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Refuse anything but a unicast IPv4 or IPv6 address."""
    if not isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        refuse(inst, attribute, value, "is not an IPv4 or IPv6 address")
    if getattr(value, "scope_id", None):
        refuse(inst, attribute, value, "has a scope id: no backend carries one yet")
    if value.is_multicast or value.is_unspecified:
        refuse(inst, attribute, value, "is not a unicast address")


def member_of(enum_type: type[Any]) -> Validator:
    """A validator refusing anything but a member of ``enum_type``, naming the members."""
    names = ", ".join(m.value for m in enum_type)

    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, enum_type):
            refuse(inst, attribute, value, f"is not one of: {names}")

    return check


def int_in(lo: int, hi: int, what: str) -> Validator:
    """A validator refusing anything but an int in ``lo..hi``: ``is not <what> (<lo>..<hi>)``."""

    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            refuse(inst, attribute, value, f"is not {what} ({lo}..{hi})")

    return check


def number(minimum: float, *, inclusive: bool = False, unit: str = "seconds") -> Validator:
    """A validator refusing anything but a finite number above ``minimum`` (or at it, if ``inclusive``)."""
    bound = f">= {minimum}" if inclusive else f"> {minimum}"

    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or (value < minimum if inclusive else value <= minimum)):
            refuse(inst, attribute, value, f"is not a number of {unit} {bound}")

    return check


def count(minimum: int) -> Validator:
    """A validator refusing anything but an int at or above ``minimum``."""

    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            refuse(inst, attribute, value, f"is not a count >= {minimum}")

    return check


def instance_of(*types: type) -> Validator:
    """A validator refusing anything but an instance of ``types`` (attrs' own raises a bare TypeError).

    bool is not taken for int or float: ``True`` is not a number of seconds.
    """
    names = " or ".join(t.__name__ for t in types)
    numeric = any(t in (int, float) for t in types) and bool not in types

    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, types) or (numeric and isinstance(value, bool)):
            refuse(inst, attribute, value, f"is not a {names}")

    return check


def as_dict(value: object) -> object:
    """A mapping as a dict (a copy the caller cannot change); anything else is left for the validator."""
    return dict(value) if isinstance(value, Mapping) else value


def mapping_of(key_type: type, value_type: type | tuple[type, ...], what: str) -> Validator:
    """A validator refusing anything but a dict from ``key_type`` to ``value_type``: ``is not <what>``."""

    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, dict) or not all(isinstance(k, key_type) for k in value) \
                or not all(isinstance(v, value_type) for v in value.values()):
            refuse(inst, attribute, value, f"is not {what}")

    return check


def optional_instance_of(*types: type) -> Validator:
    """:func:`instance_of`, or None."""
    return attrs.validators.optional(instance_of(*types))


def boolean(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Refuse anything but True or False (1 and "yes" are not)."""
    if not isinstance(value, bool):
        refuse(inst, attribute, value, "is not a bool")


#: A port that may be 0 (a fwmark service's, or "every port" with persistence).
any_port = int_in(0, 65535, "a port")
#: A port a packet can carry, or None.
optional_port = attrs.validators.optional(int_in(1, 65535, "a port"))
optional_unicast = attrs.validators.optional(unicast)


# -- the class as a whole --------------------------------------------------------------------------


def value_object(cls: _C) -> _C:
    """Name a call's argument errors, and show the object as a user writes it.

    Applied above ``@attrs.frozen``. attrs' ``__init__`` raises a bare TypeError for a missing
    field, a keyword-only field given by position or an unknown keyword; here that becomes an
    :class:`~lbcore.errors.InvalidArguments` naming the class, the field and, for a keyword-only
    one, how to write it. The check runs only after a TypeError, so a call that binds costs one
    frame more. The repr (see :func:`readable_repr`) replaces attrs' own.
    """
    cls.__repr__ = readable_repr  # type: ignore[assignment]
    init = cls.__init__  # type: ignore[misc]  # the class's own, which attrs just wrote
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self: Any, /, *args: Any, **kwargs: Any) -> None:  # a keyword "self" is a field's error
        try:
            init(self, *args, **kwargs)
        except TypeError:
            error = _argument_error(cls.__name__, signature, args, kwargs)
            if error is None:
                raise  # the arguments bind: the TypeError came from inside (a converter)
            raise error from None

    cls.__init__ = __init__  # type: ignore[misc]
    return cls


def readable_repr(obj: Any) -> str:
    """``Class(field=value, ...)`` with the fields that differ from their defaults, in the forms the
    converters take (``'tcp'``, ``'192.0.2.10'``, lists), so the text is also the code that makes it.
    """
    parts = []
    for field in attrs.fields(type(obj)):
        if not field.repr or not field.init:
            continue
        value = getattr(obj, field.name)
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory(obj) if default.takes_self else default.factory()
        if default is not attrs.NOTHING and value == default:
            continue
        parts.append(f"{field.alias or field.name}={shown(value)}")
    return f"{type(obj).__name__}({', '.join(parts)})"


def shown(value: object) -> str:
    """``value`` as a user writes it: an enum by its value, an address or network as text."""
    if isinstance(value, enum.Enum):
        return repr(value.value)
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address,
                          ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return repr(str(value))
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(shown(v) for v in value)}]"
    if isinstance(value, (set, frozenset)):
        return f"[{', '.join(sorted(shown(v) for v in value))}]"
    if isinstance(value, Mapping):
        return f"{{{', '.join(f'{shown(k)}: {shown(v)}' for k, v in value.items())}}}"
    return repr(value)


def _argument_error(owner: str, signature: inspect.Signature, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> InvalidArguments | None:
    params = list(signature.parameters.values())[1:]  # after self
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    keyword_only = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    if len(args) > len(positional):
        extra = args[len(positional):]
        free = [name for name in keyword_only if name not in kwargs]
        if not positional or len(extra) > len(free):
            # Which field a value was meant for is a guess only where the class has positional
            # fields and the keyword-only ones can take every extra value, in their order.
            takes = (f"at most {len(positional)} ({', '.join(positional)}), and the rest" if positional
                     else "every argument")
            return InvalidArguments(owner, "(positional)", args, f"are given by position; {owner} takes {takes} "
                                    f"by keyword ({', '.join(keyword_only)})")
        words = ", ".join(f"{name}={value!r}" for name, value in zip(free, extra))
        return InvalidArguments(owner, free[0], extra[0],
                                f"is given by position, but {', '.join(free[:len(extra)])} "
                                f"{'is' if len(extra) == 1 else 'are'} keyword-only: write {owner}(..., {words})")
    names = positional + keyword_only
    for name, value in kwargs.items():
        if name not in names:
            return InvalidArguments(owner, name, value, f"is not a field of {owner} ({', '.join(names)})")
    for name in positional[:len(args)]:
        if name in kwargs:
            return InvalidArguments(owner, name, kwargs[name], "is given twice: by position and by keyword")
    given = set(positional[:len(args)]) | set(kwargs)
    missing = [p.name for p in params if p.default is p.empty and p.name not in given]
    if missing:
        return InvalidArguments(owner, missing[0], None, f"is required ({owner} needs {', '.join(missing)})",
                                missing=True)
    return None
