"""The deployment file: a whole director as YAML, read into a :class:`~lbcore.Deployment` and written back.

One document describes the director: its virtual services (each with its real servers and, under
``health:``, its health check), the rules of :mod:`lbcore.rules`, the timeouts and sysctls, and
the backend that carries it out::

    >>> from lbcore.formats.yaml import dump, load
    >>> deployment = load('''
    ... services:
    ...   - protocol: tcp
    ...     address: 192.168.2.202
    ...     port: 8080
    ...     scheduler: wlc
    ...     persistence: {timeout: 3600}
    ...     real_servers:
    ...       - {address: 192.168.2.210, port: 8080, forward: dr}
    ...       - {address: 192.168.2.211, port: 8080, forward: dr, weight: 2}
    ...     health:
    ...       check: tcp
    ...       policy: {interval: 10, timeout: 5, fall: 3, rise: 2}
    ... ''', "deploy.yaml")
    >>> [str(s.key) for s in deployment.table()]
    ['-t 192.168.2.202:8080']
    >>> load(dump(deployment)) == deployment
    True

The file's field names are the model's (ipvsadm's and keepalived's words: ``scheduler``,
``persistence``, ``weight``, ``u_threshold``); see the deployment file's page in the docs for every
field. Reading is strict: every problem in the file is found, and all of them are raised at once
as one :class:`~lbcore.errors.ConfigError`, each with its line, column and field path::

    >>> from lbcore import ConfigError
    >>> try:
    ...     load('''
    ... services:
    ...   - {protocol: tcp, address: 192.0.2.1, port: 80,
    ...      real_servers: [{address: 198.51.100.1, port: 80, wieght: 2},
    ...                     {address: 198.51.100.2, port: 80, weight: -1}]}
    ... ''', "deploy.yaml")
    ... except ConfigError as error:
    ...     for problem in error.problems:
    ...         print(f"{problem.line}:{problem.column} {problem.path}: {problem.message}")
    4:55 services[0].real_servers[0].wieght: is not a field of RealServer (did you mean 'weight'?)
    5:63 services[0].real_servers[1].weight: -1 is not a weight (0..2147483647)

``str(error)`` gives the same, one ``file:line:column: path: message`` a line.

The model is structured with a ``cattrs`` converter whose hooks validate each field with the
model's own converter and validator before the object is made, so several bad fields of one
object are all reported; the positions come from ruamel.yaml's round-trip loader.

.. versionadded:: 0.4
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import difflib
import enum
import functools
import inspect
import io
import ipaddress
import re
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Union

import attrs
import cattrs
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from lbcore._fields import shown
from lbcore.deployment import BackendChoice, Deployment, Service
from lbcore.errors import ConfigError, ConfigProblem, InvalidField, LBError
from lbcore.health.checks import Check
from lbcore.health.monitor import CheckedService
from lbcore.model import RealServer, VirtualService
from lbcore.rules import AutoNat, FirewallMark, LoopbackVIP, PolicyRoute, Redirect, Rule

__all__ = ["CHECK_KINDS", "KINDS", "RULE_KINDS", "WORDS", "FieldDoc", "ObjectDoc", "dump", "json_schema", "load",
           "reference"]

#: The ``kind`` of each rule, as its one-line text form (:meth:`lbcore.FirewallMark.text`) starts.
RULE_KINDS: dict[str, type[Any]] = {
    "mark": FirewallMark, "auto-nat": AutoNat, "redirect": Redirect, "policy-route": PolicyRoute,
    "loopback-vip": LoopbackVIP,
}


def _check_kinds() -> dict[str, type[Check]]:
    kinds: dict[str, type[Check]] = {}
    pending = list(Check.__subclasses__())
    while pending:
        cls = pending.pop(0)
        kinds[cls.__name__.removesuffix("Check").lower()] = cls
        pending.extend(cls.__subclasses__())
    return kinds


#: The ``kind`` of each health check, its class's name without "Check" in lower case (``tcp``,
#: ``http``, ``ping``, ...).
CHECK_KINDS: dict[str, type[Check]] = _check_kinds()

#: Both tagged unions of the file (what ``kind`` names), by the type a field holds.
KINDS: dict[Any, dict[str, type[Any]]] = {Rule: RULE_KINDS, Check: CHECK_KINDS}

#: Other words the file takes for a value, by class and field. These are ipvsadm's long options
#: for the forwarding method (``gatewaying``, ``masquerading``, ``ipip``) and keepalived's
#: ``lb_kind`` (``DR``, ``NAT``, ``TUN``); :func:`dump` writes the model's own word.
WORDS: dict[tuple[type[Any], str], dict[str, str]] = {
    (RealServer, "forward"): {"gatewaying": "dr", "masquerading": "nat", "ipip": "tunnel",
                              "DR": "dr", "NAT": "nat", "TUN": "tunnel"},
}

#: At most this many values are read from one file (aliases can make a short file expand without end).
MAX_VALUES = 200_000
#: Lists and mappings nest at most this deep.
MAX_DEPTH = 64

_BAD: Any = object()  # a value that could not be structured; its problem is recorded already


# -- where we are in the document ---------------------------------------------------------------


@attrs.define
class _Reading:
    """The state of one :func:`load`: the problems found so far, and where the reader is."""

    filename: str
    problems: list[ConfigProblem] = attrs.Factory(list)
    stack: list[tuple[str | int, tuple[int, int]]] = attrs.Factory(list)
    active: set[int] = attrs.Factory(set)
    budget: int = MAX_VALUES

    def path(self, *more: str | int) -> str:
        text = ""
        for segment in [s for s, _ in self.stack] + list(more):
            if isinstance(segment, int):
                text += f"[{segment}]"
            elif segment.isidentifier():
                text += f".{segment}" if text else segment
            else:
                text += f"[{segment!r}]"
        return text

    @property
    def here(self) -> tuple[int, int]:
        return self.stack[-1][1] if self.stack else (0, 0)

    def problem(self, message: str, at: tuple[int, int] | None = None, *more: str | int) -> Any:
        line, column = at if at is not None else self.here
        self.problems.append(ConfigProblem(self.filename, line + 1, column + 1, self.path(*more), message))
        return _BAD

    @contextlib.contextmanager
    def at(self, segment: str | int, position: tuple[int, int]) -> Iterator[None]:
        self.stack.append((segment, position))
        try:
            yield
        finally:
            self.stack.pop()

    def spend(self) -> bool:
        """Count one value read; False (once with a problem) when the file has too many."""
        self.budget -= 1
        if self.budget == 0:
            self.problem(f"has more than {MAX_VALUES} values (aliases expand it without end?)")
        return self.budget > 0


# The reading in progress. cattrs' hooks take (value, type) only, so they find it here; a context
# variable keeps loads in two threads (or tasks) apart.
_READING: contextvars.ContextVar[_Reading] = contextvars.ContextVar("lbcore_yaml_reading")


def _reading() -> _Reading:
    return _READING.get()


def _own_position(value: object, fallback: tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, (CommentedMap, CommentedSeq)):
        with contextlib.suppress(AttributeError, TypeError):
            if value.lc.line is not None:
                return (value.lc.line, value.lc.col)
    return fallback


def _key_position(mapping: object, key: object, fallback: tuple[int, int]) -> tuple[int, int]:
    if isinstance(mapping, CommentedMap):
        with contextlib.suppress(KeyError, AttributeError, TypeError):
            return tuple(mapping.lc.key(key))
    return fallback


def _value_position(mapping: object, key: object, fallback: tuple[int, int]) -> tuple[int, int]:
    if isinstance(mapping, CommentedMap):
        with contextlib.suppress(KeyError, AttributeError, TypeError):
            value = mapping[key]
            if isinstance(value, (CommentedMap, CommentedSeq)) and value.lc.line is not None:
                return (value.lc.line, value.lc.col)
            return tuple(mapping.lc.value(key))
    return fallback


def _item_position(sequence: object, index: int, fallback: tuple[int, int]) -> tuple[int, int]:
    if isinstance(sequence, CommentedSeq):
        with contextlib.suppress(KeyError, AttributeError, TypeError, IndexError):
            value = sequence[index]
            if isinstance(value, (CommentedMap, CommentedSeq)) and value.lc.line is not None:
                return (value.lc.line, value.lc.col)
            return tuple(sequence.lc.item(index))
    return fallback


# -- plain values ---------------------------------------------------------------------------------


class _Refused(Exception):
    """A value the file may not hold here; the message says why (recorded as a problem)."""


def _plain(value: object, depth: int = 0) -> Any:
    """A YAML value as plain Python: dict, list, str, int, float, bool, None (ruamel's subclasses dropped).

    Raises:
        _Refused: the value has a tag or a type the file does not take, or nests too deep.
    """
    if not _reading().spend():
        raise _Refused("")  # the problem is recorded once, by spend()
    if depth > MAX_DEPTH:
        raise _Refused(f"nests deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):  # !!binary
        return bytes(value)
    if isinstance(value, Mapping):
        if id(value) in _reading().active:
            raise _Refused("refers to itself (an alias inside its own anchor)")
        _reading().active.add(id(value))
        try:
            return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in value.items()}
        except TypeError:  # a list or mapping as a key
            raise _Refused("has a key that is not a scalar") from None
        finally:
            _reading().active.discard(id(value))
    if isinstance(value, (list, tuple)):
        if id(value) in _reading().active:
            raise _Refused("refers to itself (an alias inside its own anchor)")
        _reading().active.add(id(value))
        try:
            return [_plain(v, depth + 1) for v in value]
        finally:
            _reading().active.discard(id(value))
    if isinstance(value, (datetime.date, datetime.datetime)):
        raise _Refused(f"{value.isoformat()!r} is a date: write it in quotes if it is text")
    tag = getattr(value, "tag", None)
    shown_tag = getattr(tag, "value", tag)
    raise _Refused(f"has a YAML tag or type lbcore does not read ({shown_tag or type(value).__name__})")


# -- the types of the model -------------------------------------------------------------------------


_FIELDS: dict[type[Any], tuple[attrs.Attribute[Any], ...]] = {}


def _fields(cls: type[Any]) -> tuple[attrs.Attribute[Any], ...]:
    """The fields a file gives (init ones), with their types resolved."""
    if cls not in _FIELDS:
        attrs.resolve_types(cls)
        _FIELDS[cls] = tuple(f for f in attrs.fields(cls) if f.init)
    return _FIELDS[cls]


def _without_none(tp: Any) -> tuple[Any, bool]:
    """The type without None, and whether None was part of it."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if not optional:
            return tp, False
        return (args[0] if len(args) == 1 else functools.reduce(lambda a, b: a | b, args)), True
    return tp, False


def _is_model(tp: Any) -> bool:
    """Whether values of ``tp`` are structured by a hook (an attrs class, a union of them, a list of them)."""
    if tp == Service or tp in KINDS or (isinstance(tp, type) and attrs.has(tp)):
        return True
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _is_model(args[0])
    return origin in (Mapping, dict) and len(args) == 2 and _is_model(args[1])


# -- structuring: the file into the model ------------------------------------------------------------


def _structure_object(value: Any, cls: type[Any], fixed: Mapping[str, Any] | None = None,
                      extra: frozenset[str] = frozenset()) -> Any:
    """Structure one attrs object from a mapping, reporting every bad field before making it.

    ``fixed`` gives fields that do not come from the file (a checked service's ``service``);
    ``extra`` names keys the caller reads itself (``kind``, ``health``).
    """
    reading = _reading()
    if not reading.spend():
        return _BAD
    if not isinstance(value, Mapping):
        return reading.problem(f"{_shown_input(value)} is not a mapping (the fields of {cls.__name__})")
    if id(value) in reading.active:
        return reading.problem("refers to itself (an alias inside its own anchor)")
    fixed = fixed or {}
    here = _own_position(value, reading.here)
    fields = {f.name: f for f in _fields(cls) if f.name not in fixed}
    kwargs: dict[str, Any] = dict(fixed)
    bad = any(v is _BAD for v in fixed.values())
    reading.active.add(id(value))
    try:
        for key in value:
            if key in fields or key in extra:
                continue
            bad = True
            at = _key_position(value, key, here)
            if not isinstance(key, str):
                reading.problem(f"{_shown_input(key)} is not a field name", at)
                continue
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" ({', '.join(fields)})"
            reading.problem(f"is not a field of {cls.__name__}{hint}", at, key)
        dummy = object.__new__(cls)
        for name, field in fields.items():
            if name not in value:
                if field.default is attrs.NOTHING:
                    bad = True
                    reading.problem(f"is required ({cls.__name__} needs "
                                    f"{', '.join(n for n, f in fields.items() if f.default is attrs.NOTHING)})",
                                    here, name)
                continue
            with reading.at(name, _value_position(value, name, here)):
                result = _structure_field(value[name], cls, field, dummy)
            if result is _BAD:
                bad = True
            else:
                kwargs[name] = result
    finally:
        reading.active.discard(id(value))
    if bad:
        return _BAD
    try:
        return cls(**kwargs)
    except InvalidField as exc:
        return _refusal(exc, value, cls, here, kwargs)
    except Exception as exc:
        return reading.problem(f"is not a valid {cls.__name__} ({type(exc).__name__}: {exc})", here)


def _refusal(exc: InvalidField, value: Mapping[Any, Any], cls: type[Any], here: tuple[int, int],
             kwargs: Mapping[str, Any]) -> Any:
    """Record a refusal of the object as a whole (a check across fields), at the field it names.

    A check of a part (a real server that does not fit its service, a fallback server) names the
    part's class and field: the problem goes to the first part of that class whose field holds the
    refused value.
    """
    reading = _reading()
    names = {f.name for f in _fields(cls)}
    if exc.owner == cls.__name__ and exc.field in names:
        at = _value_position(value, exc.field, here) if exc.field in value else here
        return reading.problem(_message(exc), at, exc.field)
    for name, built in kwargs.items():
        raw = value.get(name) if name in names else None
        parts = list(enumerate(built)) if isinstance(built, tuple) else [(None, built)]
        for index, part in parts:
            if type(part).__name__ != exc.owner or getattr(part, exc.field, object()) != exc.value:
                continue
            raw_part = raw[index] if index is not None and isinstance(raw, list) and index < len(raw) else raw
            at = _value_position(value, name, here)
            if index is not None:
                at = _item_position(raw, index, at)
            at = _value_position(raw_part, exc.field, at)
            segments = [name, index, exc.field] if index is not None else [name, exc.field]
            return reading.problem(_message(exc), at, *segments)
    return reading.problem(f"{exc.owner}.{exc.field}: {_message(exc)}", here)


def _message(exc: InvalidField) -> str:
    if exc.value is None:
        return exc.reason  # a missing value ("must be set unless fwmark is"): nothing to show
    return f"{shown(exc.value)} {exc.reason}"


def _shown_input(value: object) -> str:
    try:
        plain = _plain(value)
    except _Refused:
        return type(value).__name__
    text = shown(plain)
    return text if len(text) <= 60 else text[:57] + "..."


def _structure_field(raw: Any, cls: type[Any], field: attrs.Attribute[Any], dummy: object) -> Any:
    """One field: a nested object through the converter, a scalar through the field's converter and validator."""
    reading = _reading()
    tp, optional = _without_none(field.type)
    if raw is None and (optional or field.default is None):
        value: Any = None
    elif _is_model(tp):
        value = CONVERTER.structure(raw, tp)
        if value is _BAD:
            return _BAD
    else:
        try:
            value = _plain(raw)
        except _Refused as refused:
            return reading.problem(str(refused)) if str(refused) else _BAD
        words = WORDS.get((cls, field.name))
        if words and isinstance(value, str):
            value = words.get(value, value)
        if tp is bytes and isinstance(value, str):
            try:
                value = value.encode("latin-1")
            except UnicodeEncodeError:
                return reading.problem(f"{shown(value)} has characters beyond \\xff: write bytes as latin-1 text")
    try:
        convert: Any = field.converter
        if convert is not None:  # as attrs' __init__ would, None included
            value = convert(value)
        if field.validator is not None:
            field.validator(dummy, field, value)
    except InvalidField as exc:
        return reading.problem(_message(exc))
    except Exception as exc:
        return reading.problem(f"{_shown_input(raw)} is not a valid {field.name} ({type(exc).__name__})")
    return value


def _structure_tuple(value: Any, tp: Any) -> Any:
    reading = _reading()
    if not reading.spend():
        return _BAD
    (item_type, _) = typing.get_args(tp)
    if not isinstance(value, list):
        return reading.problem(f"{_shown_input(value)} is not a list")
    if id(value) in reading.active:
        return reading.problem("refers to itself (an alias inside its own anchor)")
    here = _own_position(value, reading.here)
    items = []
    seen: dict[object, int] = {}
    reading.active.add(id(value))
    try:
        for index, raw in enumerate(value):
            at = _item_position(value, index, here)
            with reading.at(index, at):
                item = CONVERTER.structure(raw, item_type)
                if item is not _BAD and hasattr(item, "key"):
                    if item.key in seen:
                        item = reading.problem(f"{_identity(item)} appears twice (first as "
                                               f"{reading.path()[: -len(str(index)) - 2]}[{seen[item.key]}])")
                    else:
                        seen[item.key] = index
            items.append(item)
    finally:
        reading.active.discard(id(value))
    return _BAD if any(i is _BAD for i in items) else tuple(items)


def _identity(item: Any) -> str:
    if isinstance(item, RealServer):
        return item.endpoint
    if hasattr(item, "text"):
        return str(item.text())
    return str(item.key)


def _structure_checks(value: Any, tp: Any) -> Any:
    reading = _reading()
    if not reading.spend():
        return _BAD
    (_, item_type) = typing.get_args(tp)
    if not isinstance(value, Mapping):
        return reading.problem(f"{_shown_input(value)} is not a mapping")
    here = _own_position(value, reading.here)
    found: dict[str, Any] = {}
    bad = False
    for key, raw in value.items():
        if not isinstance(key, str):
            bad = True
            reading.problem(f"{_shown_input(key)} is not a real server (address:port)", _key_position(value, key, here))
            continue
        with reading.at(key, _value_position(value, key, here)):
            found[key] = CONVERTER.structure(raw, item_type)
        bad = bad or found[key] is _BAD
    return _BAD if bad else found


def _structure_kind(value: Any, tp: Any) -> Any:
    """A rule or a check: ``kind:`` says which class; a check without fields may be just its kind."""
    reading = _reading()
    kinds = KINDS[tp]
    here = _own_position(value, reading.here)
    fields: Any
    if isinstance(value, str) and tp is Check:
        kind, fields, at = str(value), CommentedMap(), here
    elif isinstance(value, Mapping):
        if "kind" not in value:
            return reading.problem(f"is required (one of: {', '.join(kinds)})", here, "kind")
        kind, fields, at = value["kind"], value, _value_position(value, "kind", here)
    else:
        what = "a mapping with kind:" + (" or a check's kind" if tp is Check else "")
        return reading.problem(f"{_shown_input(value)} is not {what} ({', '.join(kinds)})")
    if not isinstance(kind, str) or kind not in kinds:
        close = difflib.get_close_matches(str(kind), list(kinds), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"one of: {', '.join(kinds)}"
        what = "check" if tp is Check else "rule"
        return reading.problem(f"{_shown_input(kind)} is not a kind of {what} ({hint})", at,
                               *(["kind"] if fields is value else []))
    return _structure_object(fields, kinds[kind], extra=frozenset({"kind"}))


def _structure_service(value: Any, _: Any) -> Any:
    """A service: a virtual service's fields, and ``health:`` (a CheckedService's other fields) when checked."""
    reading = _reading()
    service = _structure_object(value, VirtualService, extra=frozenset({"health"}))
    if not isinstance(value, Mapping) or "health" not in value:
        return service
    here = _own_position(value, reading.here)
    with reading.at("health", _value_position(value, "health", here)):
        return _structure_object(value["health"], CheckedService, fixed={"service": service})


def _structure_backend(value: Any, _: Any) -> Any:
    """A backend: its name alone, or its name and options."""
    if isinstance(value, str):
        value = CommentedMap(name=value)
    elif not isinstance(value, Mapping):
        return _reading().problem(f"{_shown_input(value)} is not a backend's name or a mapping (name:, options:)")
    return _structure_object(value, BackendChoice)


def _is_model_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple and _is_model(tp)


def _is_model_mapping(tp: Any) -> bool:
    return typing.get_origin(tp) in (Mapping, dict) and _is_model(tp)


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter()
    converter.register_structure_hook_factory(
        attrs.has, lambda cls: functools.partial(lambda value, _, cls: _structure_object(value, cls), cls=cls))
    converter.register_structure_hook_func(_is_model_tuple, _structure_tuple)
    converter.register_structure_hook_func(_is_model_mapping, _structure_checks)
    converter.register_structure_hook_func(lambda t: t in KINDS, _structure_kind)
    converter.register_structure_hook_func(lambda t: t == Service, _structure_service)
    converter.register_structure_hook_func(lambda t: t is BackendChoice, _structure_backend)
    _register_unstructure(converter)
    return converter


# -- unstructuring: the model into the file -----------------------------------------------------------


def _unstructure_object(obj: Any, converter: cattrs.Converter) -> dict[str, Any]:
    """The fields of ``obj`` that differ from their defaults (and are not derived from the others)."""
    out: dict[str, Any] = {}
    for field in _fields(type(obj)):
        value = getattr(obj, field.name)
        default: Any = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory(obj) if default.takes_self else default.factory()
        if default is not attrs.NOTHING:
            if value == default:
                continue
            with contextlib.suppress(LBError):
                if attrs.evolve(obj, **{field.name: default}) == obj:
                    continue  # derived (a service's family, a tunnel real server's default tunnel)
        out[field.name] = converter.unstructure(value)
    return out


def _kind_of(obj: Any, tp: Any) -> str:
    return next(kind for kind, cls in KINDS[tp].items() if type(obj) is cls)


def _register_unstructure(converter: cattrs.Converter) -> None:
    def model(cls: type[Any]) -> Callable[[Any], Any]:
        if issubclass(cls, CheckedService):
            def checked(obj: CheckedService) -> Any:
                health = _unstructure_object(obj, converter)
                del health["service"]
                return {**converter.unstructure(obj.service), "health": health}
            return checked
        if cls is BackendChoice:
            def backend(obj: BackendChoice) -> Any:
                fields = _unstructure_object(obj, converter)
                return obj.name if not obj.options else {"name": obj.name, **fields}
            return backend
        for tp, kinds in KINDS.items():
            if cls in kinds.values():
                def tagged(obj: Any, tp: Any = tp) -> Any:
                    fields = _unstructure_object(obj, converter)
                    kind = _kind_of(obj, tp)
                    return kind if tp is Check and not fields else {"kind": kind, **fields}
                return tagged
        return lambda obj: _unstructure_object(obj, converter)

    converter.register_unstructure_hook_factory(attrs.has, model)
    for address in (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network,
                    ipaddress.IPv6Network, ipaddress.IPv4Interface, ipaddress.IPv6Interface):
        converter.register_unstructure_hook(address, str)
    for enum_type in _model_enums():
        converter.register_unstructure_hook(enum_type, lambda member: member.value)
    converter.register_unstructure_hook(bytes, lambda data: data.decode("latin-1"))
    converter.register_unstructure_hook(tuple, lambda items: [converter.unstructure(i) for i in items])
    converter.register_unstructure_hook(
        frozenset, lambda items: sorted((converter.unstructure(i) for i in items), key=lambda v: (str(type(v)), v)))
    converter.register_unstructure_hook(dict, lambda m: {k: converter.unstructure(v) for k, v in m.items()})
    converter.register_unstructure_hook(list, lambda items: [converter.unstructure(i) for i in items])


def _model_classes() -> list[type[Any]]:
    """Every attrs class of the file, from Deployment down, in the order they first appear."""
    found: list[type[Any]] = []
    pending: list[Any] = [Deployment]
    while pending:
        tp = pending.pop(0)
        for t in _leaf_types(tp):
            if isinstance(t, type) and attrs.has(t) and t not in found:
                found.append(t)
                pending.extend(f.type for f in _fields(t))
            elif t in KINDS:
                pending.extend(KINDS[t].values())
            elif t == Service:
                pending.extend([VirtualService, CheckedService])
    return found


def _leaf_types(tp: Any) -> Iterator[Any]:
    if tp == Service or tp in KINDS:
        yield tp
        return
    args = typing.get_args(tp)
    if args:
        for arg in args:
            if arg is not Ellipsis:
                yield from _leaf_types(arg)
    else:
        yield tp


def _model_enums() -> list[type[enum.Enum]]:
    return [t for cls in _model_classes() for f in _fields(cls) for t in _leaf_types(f.type)
            if isinstance(t, type) and issubclass(t, enum.Enum)]


CONVERTER = _make_converter()


# -- the file ---------------------------------------------------------------------------------------


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = True  # found by _duplicate_keys, all of them, with their lines
    return yaml


def _duplicate_keys(node: Node | None, reading: _Reading) -> None:
    seen_nodes: set[int] = set()
    pending = [node]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen_nodes:
            continue
        seen_nodes.add(id(current))
        if isinstance(current, MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, value in current.value:
                pending.extend([key, value])
                if isinstance(key.value, str):
                    name = (str(key.tag), key.value)
                    if name in first:
                        mark = key.start_mark
                        reading.problem(f"{key.value!r} is given twice (first on line {first[name] + 1})",
                                        (mark.line, mark.column))
                    else:
                        first[name] = key.start_mark.line
        elif isinstance(current, SequenceNode):
            pending.extend(current.value)


def _parse(text: str, reading: _Reading) -> Any:
    """The document, as ruamel's round-trip objects (None when it has none); problems recorded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _duplicate_keys(_yaml().compose(text), reading)
            return _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = (mark.line, mark.column) if mark is not None else (0, 0)
        message = " ".join(str(p) for p in (exc.problem, exc.context and f"({exc.context})") if p)
        reading.problem(f"is not YAML: {message or exc}", at)
    except YAMLError as exc:
        position = getattr(exc, "position", None)
        at = _line_column(text, position) if isinstance(position, int) else (0, 0)
        reason = getattr(exc, "reason", None) or str(exc)
        character = getattr(exc, "character", None)
        what = f" ({character!r})" if isinstance(character, (str, int)) else ""
        reading.problem(f"is not YAML: {reason}{what}", at)
    except RecursionError:
        reading.problem("is not read: its lists and mappings nest too deep")
    except Exception as exc:
        reading.problem(f"is not YAML lbcore can read ({type(exc).__name__}: {exc})")
    return _BAD


def _block_style(value: Any) -> Any:
    """Mappings and lists of mappings one field a line; a list of scalars on one line (``ports: [80, 443]``)."""
    if isinstance(value, dict):
        return CommentedMap((k, _block_style(v)) for k, v in value.items())
    if isinstance(value, list):
        seq = CommentedSeq(_block_style(v) for v in value)
        if not any(isinstance(v, (dict, list)) for v in value):
            seq.fa.set_flow_style()
        return seq
    if isinstance(value, str) and not value.isprintable():
        # ruamel.yaml writes a NEL or a line separator bare in a plain or single-quoted scalar,
        # where a reader folds it; double quotes escape it (\N, \L).
        return DoubleQuotedScalarString(value)
    return value


def _line_column(text: str, position: int) -> tuple[int, int]:
    before = text[:position]
    return (before.count("\n"), position - (before.rfind("\n") + 1))


def load(text: str | bytes, filename: str = "<string>") -> Deployment:
    """Read a deployment file.

    Args:
        text: the file's content (bytes are read as UTF-8).
        filename: the name problems are reported under.

    Returns:
        The deployment the file describes.

    Raises:
        ConfigError: the file has problems; all of them, each with its line, column and field path.
    """
    reading = _Reading(filename)
    token = _READING.set(reading)
    try:
        return _load(text, reading)
    finally:
        _READING.reset(token)


def _load(text: object, reading: _Reading) -> Deployment:
    if isinstance(text, (bytes, bytearray)):
        data = bytes(text)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n")
            raise ConfigError([ConfigProblem(reading.filename, line + 1, 1, "",
                                             f"is not UTF-8 (byte {exc.start + 1} of the file)")]) from None
    if not isinstance(text, str):
        raise ConfigError([ConfigProblem(reading.filename, 1, 1, "", f"is not text ({type(text).__name__})")])
    document = _parse(text, reading)
    if document is None and not reading.problems:
        reading.problem("is empty: a deployment is a mapping of services:, rules:, ... ({} for nothing)")
    elif document is not _BAD:
        try:
            deployment = CONVERTER.structure(document, Deployment)
        except RecursionError:
            deployment = reading.problem("is not read: it nests too deep")
        if not reading.problems and isinstance(deployment, Deployment):
            return deployment
    raise ConfigError(reading.problems)


def dump(deployment: Deployment) -> str:
    """Write a deployment as the file :func:`load` reads back equal to it.

    Only the fields that differ from their defaults are written, in the model's order; the text
    is the same for equal deployments.

    Raises:
        InvalidField: ``deployment`` is not a Deployment.
    """
    if not isinstance(deployment, Deployment):
        raise InvalidField("dump", "deployment", deployment, "is not a Deployment")
    document = _block_style(CONVERTER.unstructure(deployment))
    yaml = YAML(typ="rt")
    yaml.default_flow_style = False
    yaml.width = 4096  # one value a line: no folding of long text
    yaml.indent(mapping=2, sequence=4, offset=2)
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


# -- the JSON Schema ---------------------------------------------------------------------------------

_SCHEMA_ID = "https://lbcore.invalid/deployment.schema.json"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the deployment file, generated from the model.

    It gives editors the fields, their types, and the bounds and choices the model's validators
    declare; :func:`load` checks the rest (checks across fields and objects).

    Raises:
        Nothing.
    """
    defs: dict[str, Any] = {}
    for cls in _model_classes():
        if cls is CheckedService:
            defs["Health"] = _object_schema(cls, skip={"service"})
        elif cls is VirtualService:
            service = _object_schema(cls)
            service["properties"]["health"] = {
                "description": "the health check of the real servers, and what a failure does (keepalived's "
                               "real_server checks; a CheckedService's fields): makes the service a checked one",
                "$ref": "#/$defs/Health"}
            defs[cls.__name__] = service
        elif cls is Check:
            continue
        else:
            defs[cls.__name__] = _object_schema(cls)
    for kinds in KINDS.values():
        for kind, cls in kinds.items():
            schema = defs[cls.__name__]
            schema["properties"] = {"kind": {"const": kind}, **schema["properties"]}
            schema["required"] = ["kind", *schema.get("required", [])]
    defs["BackendChoice"] = {"anyOf": [{"type": "string"}, defs["BackendChoice"]]}
    root = defs.pop("Deployment")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": _SCHEMA_ID,
            "title": "lbcore deployment", **root, "$defs": dict(sorted(defs.items()))}


def _object_schema(cls: type[Any], skip: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    properties = {}
    required = []
    for field in _fields(cls):
        if field.name in skip:
            continue
        described = _type_schema(field.type, field, cls)
        doc = _field_doc(cls, field.name)
        if doc:
            described = {"description": doc, **described}
        properties[field.name] = described
        if field.default is attrs.NOTHING:
            required.append(field.name)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def _type_schema(tp: Any, field: attrs.Attribute[Any] | None = None, owner: type[Any] | None = None) -> dict[str, Any]:
    inner, optional = _without_none(tp)
    schema = _inner_schema(inner, field, owner)
    if optional:
        return {"anyOf": [*schema.get("anyOf", [schema]), {"type": "null"}]}
    return schema


def _inner_schema(tp: Any, field: attrs.Attribute[Any] | None, owner: type[Any] | None) -> dict[str, Any]:
    if tp == Service:
        return {"$ref": "#/$defs/VirtualService"}
    if tp in KINDS:
        refs: list[dict[str, Any]] = [{"$ref": f"#/$defs/{cls.__name__}"} for cls in KINDS[tp].values()]
        if tp is Check:
            refs.insert(0, {"enum": list(KINDS[tp])})
        return {"anyOf": refs}
    if isinstance(tp, type) and attrs.has(tp):
        return {"$ref": f"#/$defs/{tp.__name__}"}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return {"anyOf": [_inner_schema(a, field, owner) for a in args]}
    if origin in (tuple, frozenset, list):
        item = _inner_schema(args[0], None, owner)
        return {"anyOf": [{"type": "array", "items": item}, item]} if origin is frozenset or (not _is_model(
            args[0]) and args[0] is not str) else {"type": "array", "items": item}
    if origin in (Mapping, dict):
        return {"type": "object", "additionalProperties": _inner_schema(args[1], None, owner)}
    if tp is typing.Any:
        return {}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [m.value for m in tp]
        if owner is not None and field is not None:
            values += list(WORDS.get((owner, field.name), {}))
        return {"enum": values}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer", **_bounds(field)}
    if tp is float:
        return {"type": "number", **_bounds(field)}
    if tp is str:
        return {"type": "string", **_choices(field)}
    if tp is bytes:
        return {"type": "string", "description": "bytes, as latin-1 text"}
    if isinstance(tp, type) and issubclass(tp, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return {"type": "string", "description": "an address with its prefix length"}
    if isinstance(tp, type) and issubclass(tp, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return {"type": "string", "description": "a network (address/prefix length)"}
    if isinstance(tp, type) and issubclass(tp, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return {"type": "string", "format": "ipv4" if tp is ipaddress.IPv4Address else "ipv6"}
    return {}


def _validators(field: attrs.Attribute[Any] | None) -> list[Any]:
    if field is None or field.validator is None:
        return []
    found = []
    pending = [field.validator]
    while pending:
        v = pending.pop()
        inner = getattr(v, "_validators", None) or ([v.validator] if hasattr(v, "validator") else None)
        if inner:
            pending.extend(inner)
        else:
            found.append(v)
    return found


def _closure(validator: Any) -> dict[str, Any]:
    try:
        return dict(inspect.getclosurevars(validator).nonlocals)
    except (TypeError, ValueError):
        return {}


def _bounds(field: attrs.Attribute[Any] | None) -> dict[str, Any]:
    """The bounds that the model's int_in, count and number validators declare."""
    for validator in _validators(field):
        names = _closure(validator)
        if "lo" in names and "hi" in names:
            return {"minimum": names["lo"], "maximum": names["hi"]}
        if "minimum" in names and "inclusive" in names:
            key = "minimum" if names["inclusive"] else "exclusiveMinimum"
            return {key: names["minimum"]}
        if "minimum" in names:
            return {"minimum": names["minimum"]}
    return {}


def _choices(field: attrs.Attribute[Any] | None) -> dict[str, Any]:
    """The choices a validator names in a module constant (HTTP methods, DNS types)."""
    for validator in _validators(field):
        with contextlib.suppress(TypeError, ValueError):
            for value in inspect.getclosurevars(validator).globals.values():
                if isinstance(value, (tuple, dict)) and value and all(isinstance(v, str) for v in value):
                    return {"enum": list(value)}
    return {}


def _docs(cls: type[Any]) -> dict[str, str]:
    """The ``Args:`` of a class's docstring (and its bases'), by field name."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
        if "Args:\n" not in doc:
            continue
        section = doc.split("Args:\n", 1)[1]
        name = None
        for line in section.splitlines():
            if line and not line.startswith(" "):
                break
            stripped = line.strip()
            if line.startswith("    ") and not line.startswith("        ") and ":" in stripped:
                head, text = stripped.split(":", 1)
                for one in head.split(","):
                    found[one.strip()] = text.strip()
                name = head
            elif name is not None and stripped:
                for one in name.split(","):
                    found[one.strip()] += " " + stripped
    return found


_ROLE = re.compile(r":[a-z:]+:`~?(?:[^`<]*<)?([^`>]+)>?`")


def _plain_text(doc: str) -> str:
    """Docstring text without its markup: a role gives its target's last name, ````x```` gives x."""
    doc = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1], doc)
    return doc.replace("``", "")


def _field_doc(cls: type[Any], name: str) -> str:
    return _plain_text(_docs(cls).get(name, ""))


@attrs.frozen
class FieldDoc:
    """One field of the file, as the reference tables show it.

    Attributes:
        name: the key.
        type: what it takes, in words (``integer 1..65535``, ``one of: dr, nat, tunnel``).
        default: its default as the file writes it, or ``required``.
        description: what it means, from the model's docstring.

    .. versionadded:: 0.4
    """

    name: str
    type: str
    default: str
    description: str


@attrs.frozen
class ObjectDoc:
    """One kind of object of the file: where it appears, the model's class, and its fields.

    .. versionadded:: 0.4
    """

    where: str
    cls: type[Any]
    fields: tuple[FieldDoc, ...]


def reference() -> list[ObjectDoc]:
    """Every object of the file with its fields, generated from the model (for the docs' tables).

    Raises:
        Nothing.
    """
    schema = json_schema()
    defs = {**schema["$defs"], "Deployment": schema}
    out: list[ObjectDoc] = []
    seen: set[type[Any]] = set()

    def visit(where: str, cls: type[Any]) -> None:
        """The object, then the objects of its fields, depth first: a service's parts follow it."""
        if cls in seen:
            return
        seen.add(cls)
        definition = defs["Health" if cls is CheckedService else cls.__name__]
        if "anyOf" in definition:  # a backend: its name, or this object
            definition = next(d for d in definition["anyOf"] if d.get("type") == "object")
        rows = []
        children: list[tuple[str, type[Any]]] = []
        for key, field_schema in definition["properties"].items():
            field = next((f for f in _fields(cls) if f.name == key), None)
            rows.append(FieldDoc(key, _words({k: v for k, v in field_schema.items() if k != "description"}),
                                 _default_text(field) if key != "health" else "none: not checked",
                                 field_schema.get("description", "")))
            if field is None:
                continue
            prefix = "" if cls is Deployment else f"{where}."
            container = typing.get_origin(_without_none(field.type)[0])
            suffix = "[]" if container is tuple else ".<endpoint>" if container in (Mapping, dict) else ""
            for child in _children(field.type):
                if child in KINDS:
                    children += [(f"{prefix}{key}{suffix} (kind: {kind})", c) for kind, c in KINDS[child].items()]
                elif child == Service:
                    children += [(f"{prefix}{key}[]", VirtualService), (f"{prefix}{key}[].health", CheckedService)]
                else:
                    children.append((f"{prefix}{key}{suffix}", child))
        out.append(ObjectDoc(where, cls, tuple(rows)))
        for child_where, child in children:
            visit(child_where, child)

    visit("the document", Deployment)
    return out


def _children(tp: Any) -> list[Any]:
    return [t for t in _leaf_types(tp) if t == Service or t in KINDS or (isinstance(t, type) and attrs.has(t))]


def _default_text(field: attrs.Attribute[Any] | None) -> str:
    if field is None:
        return ""
    default: Any = field.default
    if default is attrs.NOTHING:
        return "required"
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        default = default.factory() if not default.takes_self else None
    value = CONVERTER.unstructure(default)
    if value is None:
        return "null"
    out = io.StringIO()
    yaml = YAML(typ="rt")
    yaml.default_flow_style = True
    yaml.width = 4096
    yaml.dump(_block_style(value) if isinstance(value, (list, dict)) else value, out)
    return out.getvalue().strip().removesuffix("...").strip()


def _words(schema: Mapping[str, Any]) -> str:
    """A schema fragment in words: ``integer 1..65535``, ``list of RealServer``, ``one of: a, b``."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        options = schema["anyOf"]
        if len(options) >= 2 and options[0].get("type") == "array" and options[0]["items"] == options[1]:
            rest = [_words(o) for o in options[2:]]
            return " or ".join([f"list of {_words(options[1])} (or one alone)", *rest])
        if "enum" in options[0] and all("$ref" in o for o in options[1:]):
            return f"a kind alone ({', '.join(options[0]['enum'])}) or a mapping with kind:"
        return " or ".join(dict.fromkeys(_words(o) for o in options))
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return "one of: " + ", ".join(str(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"list of {_words(schema['items'])}"
    if kind == "object":
        inner = schema.get("additionalProperties")
        return f"mapping to {_words(inner)}" if inner else "mapping"
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum")
        if low is not None and high is not None:
            return f"{kind} {low}..{high}"
        if "exclusiveMinimum" in schema:
            return f"{kind} > {low}"
        return f"{kind} >= {low}" if low is not None else str(kind)
    if kind == "string":
        named = {"ipv4": "IPv4 address", "ipv6": "IPv6 address"}.get(str(schema.get("format", "")))
        return named or str(schema.get("description", "text"))
    if kind == "boolean":
        return "true or false"
    if kind == "null":
        return "null"
    return "anything"
