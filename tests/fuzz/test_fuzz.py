"""Fuzzing every place input enters: model constructors and the parsers of lbcore's formats.

Whatever comes in, lbcore answers with a value or an error of its own tree (an LBError), never a
bare TypeError, ValueError, AttributeError or UnicodeError, and never takes long over one case.

CI runs a few hundred cases per target. A longer run by hand::

    LBCORE_FUZZ_EXAMPLES=14000 LBCORE_FUZZ_HANG=1 LBCORE_FUZZ_REPORT=/tmp/fuzz.json \\
        python3 -m pytest tests/fuzz -q -p no:cacheprovider

writes, per target, the cases run, the errors by type and the longest case (seconds) to the report.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lbcore
import lbcore.health
from lbcore.enums import ForwardMethod, PersistenceEngine, Protocol, Scheduler, SchedulerFlag, TunnelType
from lbcore.errors import LBError
from lbcore.formats.ipvsadm import parse_command, parse_save
from lbcore.formats.listing import parse_proc_ip_vs_conn
from lbcore.formats.trace import parse_trace
from lbcore.rules import rule_from_text

#: Cases per parser; each model class gets an eighth of it (at least 25): there are about 30 classes.
EXAMPLES = int(os.environ.get("LBCORE_FUZZ_EXAMPLES", "200"))
REPORT = os.environ.get("LBCORE_FUZZ_REPORT")
#: A case taking longer than this is a hang. Generous, for CI on a shared machine; the long run's
#: report gives the real maximum.
HANG = float(os.environ.get("LBCORE_FUZZ_HANG", "5.0"))

FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_EACH_CLASS = settings(FUZZ, max_examples=max(25, EXAMPLES // 8))

_figures: dict[str, dict[str, Any]] = {}


def _record(target: str, outcome: str, seconds: float) -> None:
    figure = _figures.setdefault(target, {"cases": 0, "max_seconds": 0.0, "outcomes": {}})
    figure["cases"] += 1
    figure["max_seconds"] = max(figure["max_seconds"], seconds)
    figure["outcomes"][outcome] = figure["outcomes"].get(outcome, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    if REPORT:
        with open(REPORT, "w", encoding="utf-8") as out:
            json.dump(_figures, out, indent=2, sort_keys=True)


def survive(target: str, call: Callable[[], object]) -> object:
    """Run ``call``: a value, or an LBError; anything else fails the test, as does a hang."""
    began = time.perf_counter()
    outcome = "value"
    result: object = None
    try:
        result = call()
        repr(result)
    except LBError as exc:
        outcome = type(exc).__name__
    finally:
        seconds = time.perf_counter() - began
        _record(target, outcome, seconds)
    assert seconds < HANG, f"{target}: one case took {seconds:.2f} s"
    return result


# -- values of every type ----------------------------------------------------------------------------

HOSTILE_TEXT = [
    "", " ", "0", "1", "80", "-1", "65536", "2147483648", "4294967296", "\u00b2", "\u0668\u0660", "\uff11",
    "inf", "nan", "-5", "1e400", "tcp", "udp", "sctp", "rr", "wlc", "sh", "mh", "sh-port", "mh-fallback",
    "dr", "nat", "tunnel", "gue", "gre", "ipip", "sip", "csum", "10.0.0.1", "192.0.2.10", "2001:db8::1",
    "fe80::1%eth0", "255.255.255.255", "255.255.255.0", "128", "64", "0.0.0.0", "224.0.0.1",
    "10.0.0.0/24", "eth0", "lo", "\u00e9" * 8, "eth\x000", "eth/0", "a" * 16, "^(a+)+$", "(a)\\1",
    "GET", "/", "200", "example.com", "x\r\ny",
]


def _enum_members() -> list[enum.Enum]:
    return [m for e in (ForwardMethod, PersistenceEngine, Protocol, Scheduler, SchedulerFlag, TunnelType) for m in e]


def _valid_objects() -> list[object]:
    rs = lbcore.RealServer("10.0.0.2", 80)
    svc = lbcore.VirtualService("tcp", "192.0.2.10", 80, real_servers=[rs])
    return [rs, svc, lbcore.Persistence(), lbcore.Tunnel(), lbcore.Timeouts(), lbcore.Sysctls(),
            lbcore.health.Policy(), lbcore.health.TCPCheck(), svc.key, lbcore.AutoNat("eth0"), object()]


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-2, 70000), st.floats(),
    st.text(max_size=12), st.sampled_from(HOSTILE_TEXT), st.binary(max_size=8),
    st.ip_addresses(), st.sampled_from(_enum_members()), st.sampled_from(_valid_objects()),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.frozensets(scalars, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


# -- model constructors --------------------------------------------------------------------------------

# Ops, Table and Prepared are checked by their own tests (their payloads are issue 11's other part).
_NOT_HERE = {"AddRealServer", "AddRule", "AddService", "DeleteRealServer", "DeleteRule", "DeleteService",
             "EditRealServer", "EditService", "SetSysctls", "SetTimeouts", "Table", "Prepared"}


def _constructors() -> list[type]:
    found = []
    for module in (lbcore, lbcore.health):
        for name in module.__all__:
            cls = getattr(module, name)
            if isinstance(cls, type) and attrs.has(cls) and name not in _NOT_HERE:
                found.append(cls)
    return found


CONSTRUCTORS = _constructors()


@st.composite
def calls(draw: st.DrawFn, cls: type) -> tuple[list[object], dict[str, object]]:
    names = [f.alias or f.name for f in attrs.fields(cls) if f.init]
    chosen = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
    kwargs = {name: draw(values) for name in chosen}
    if draw(st.integers(0, 9)) == 0:
        kwargs[draw(st.sampled_from(["bogus", "weight", "port", "self"]))] = draw(values)
    args = draw(st.lists(values, max_size=3)) if draw(st.booleans()) else []
    return args, kwargs


@pytest.mark.parametrize("cls", CONSTRUCTORS, ids=[c.__name__ for c in CONSTRUCTORS])
@FUZZ_EACH_CLASS
@given(data=st.data())
def test_fuzz_model_constructors(cls: type, data: st.DataObject) -> None:
    args, kwargs = data.draw(calls(cls))
    obj = survive(f"constructor {cls.__name__}", lambda: cls(*args, **kwargs))
    if obj is not None:
        assert obj == obj
        hash(obj)  # a frozen value object holds only hashable (converted) values


# -- the parsers -------------------------------------------------------------------------------------------

OPTIONS = ["-A", "-E", "-D", "-C", "-a", "-e", "-d", "--set", "-t", "-u", "--sctp-service", "-f", "-s", "-p",
           "-M", "--pe", "-b", "-r", "-w", "-x", "-y", "-g", "-m", "-i", "-6", "-o", "--tun-type", "--tun-port",
           "--tun-csum", "--tun-nocsum", "--tun-remcsum", "ipvsadm", "#", "'", '"', "\\"]
ENDPOINTS = ["192.0.2.10:80", "10.0.0.2:80", "[2001:db8::1]:80", "10.0.0.2", "192.0.2.10:0", "[fe80::1%eth0]:80",
             "192.0.2.10:\u0668\u0660", "10.0.0.2:\u00b2", "1.2.3.4:65536", "[::1", "192.0.2.10:80:1"]
words = st.one_of(st.sampled_from(OPTIONS), st.sampled_from(ENDPOINTS), st.sampled_from(HOSTILE_TEXT),
                  st.text(max_size=8))


@st.composite
def ipvsadm_lines(draw: st.DrawFn) -> str:
    head = draw(st.sampled_from(["-A -t 192.0.2.10:80", "-a -t 192.0.2.10:80 -r 10.0.0.2", "-A -f 1",
                                 "-E -t 192.0.2.10:80", "--set", "-d -t 192.0.2.10:80", ""]))
    return " ".join([head, *draw(st.lists(words, max_size=8))])


SAVED = "-A -t 192.0.2.10:80 -s wlc -p 60\n-a -t 192.0.2.10:80 -r 10.0.0.2:80 -m -w 1\n"


@FUZZ
@given(lines=st.lists(st.one_of(ipvsadm_lines(), st.text(max_size=30)), max_size=6))
def test_fuzz_parse_save(lines: list[str]) -> None:
    survive("parse_save", lambda: parse_save(SAVED + "\n".join(lines)))


@FUZZ
@given(line=st.one_of(ipvsadm_lines(), st.text(max_size=40)), filled=st.booleans())
def test_fuzz_parse_command(line: str, filled: bool) -> None:
    table = parse_save(SAVED) if filled else lbcore.Table()
    survive("parse_command", lambda: parse_command(line, table))


TIMES = ["0", "1", "0.5", ".5", "1e3", "1e400", "inf", "nan", "-5", "\uff11", "\u00b2", "3", "2", "1E2", "1_0"]
KINDS = ["rules", "open", "close", "sysctl", "bogus"]
TRACE_WORDS = st.one_of(st.sampled_from(["tcp", "udp", "a", "b", "mark=1", "mark=\u00b2", "mark=4294967296",
                                         "lblc_expiration", "expire_nodest_conn", "conn_reuse_mode", "#"]),
                        st.sampled_from(ENDPOINTS), st.sampled_from(HOSTILE_TEXT), words)


@st.composite
def trace_lines(draw: st.DrawFn) -> str:
    return " ".join([draw(st.sampled_from(TIMES)), draw(st.sampled_from(KINDS)),
                     *draw(st.lists(TRACE_WORDS, max_size=6))])


@FUZZ
@given(lines=st.lists(st.one_of(trace_lines(), st.text(max_size=30)), max_size=6))
def test_fuzz_parse_trace(lines: list[str]) -> None:
    survive("parse_trace", lambda: parse_trace("\n".join(lines)))


RULE_HEADS = ["mark", "auto-nat", "redirect", "policy-route", "loopback-vip", "bogus", ""]
RULE_KEYS = ["proto", "ports", "dst", "src", "exceptdst", "to", "port", "table", "via", ""]


@st.composite
def rule_texts(draw: st.DrawFn) -> str:
    parts = [draw(st.sampled_from(RULE_HEADS))]
    for _ in range(draw(st.integers(0, 5))):
        value = draw(st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=6),
                               st.lists(st.sampled_from(HOSTILE_TEXT), max_size=3).map(",".join)))
        parts.append(f"{draw(st.sampled_from(RULE_KEYS))}={value}" if draw(st.booleans()) else value)
    return " ".join(parts)


@FUZZ
@given(text=st.one_of(rule_texts(), st.text(max_size=30)))
def test_fuzz_rule_from_text(text: str) -> None:
    rule = survive("rule_from_text", lambda: rule_from_text(text))
    if rule is not None:
        assert rule_from_text(rule.text()) == rule  # type: ignore[attr-defined]  # what is read reads back


PROC_WORDS = st.one_of(st.sampled_from(["TCP", "UDP", "SCTP", "IP_6", "IP_\u00b2", "C0000201", "0050", "\u0668\u0660",
                                         "2001:db8::1", "fe80::1%eth0", "ESTABLISHED", "899", "-1", "ffffffffff"]),
                       st.text(max_size=6))


@FUZZ
@given(lines=st.lists(st.lists(PROC_WORDS, max_size=12).map(" ".join), max_size=4))
def test_fuzz_parse_proc_ip_vs_conn(lines: list[str]) -> None:
    header = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData"
    survive("parse_proc_ip_vs_conn", lambda: parse_proc_ip_vs_conn("\n".join([header, *lines])))


def test_the_fuzzed_constructors_are_the_public_value_objects() -> None:
    names = {c.__name__ for c in CONSTRUCTORS}
    assert {"VirtualService", "RealServer", "Persistence", "AutoNat", "HTTPCheck", "Deployment"} <= names
    assert ipaddress.ip_address("192.0.2.10")  # (the strategies build addresses of both families)
