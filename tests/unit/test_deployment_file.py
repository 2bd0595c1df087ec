"""The deployment file: the guide's options as files, every problem at once with its place, and round trips.

The hypothesis tests are bounded for CI; a longer run sets ``LBCORE_FUZZ_EXAMPLES`` (e.g. 20000).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import string
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from lbcore import (
    AutoNat,
    BackendChoice,
    ConfigError,
    ConfigProblem,
    DaemonSettings,
    Deployment,
    FirewallMark,
    FloatingIP,
    HAPair,
    Host,
    InvalidField,
    LoopbackVIP,
    Node,
    Persistence,
    PolicyRoute,
    RealServer,
    Redirect,
    Sysctls,
    Timeouts,
    Tunnel,
    VirtualService,
)
from lbcore.formats.yaml import KINDS, dump, json_schema, load, reference
from lbcore.health import (
    CheckedService,
    DNSCheck,
    ExecCheck,
    FixedCheck,
    HTTPCheck,
    PingCheck,
    Policy,
    SMTPCheck,
    TCPCheck,
    UDPCheck,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FUZZ = int(os.environ.get("LBCORE_FUZZ_EXAMPLES", "200"))
OPTIONS = {"option-1a.yaml": "01_option_1a", "option-1b.yaml": "02_option_1b", "option-1c.yaml": "03_option_1c",
           "option-2.yaml": "04_option_2"}


def example(name: str) -> ModuleType:
    """An example script as a module (its name starts with a digit: no plain import)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCHEMA = jsonschema.Draft202012Validator(json_schema())


def schema_errors(text: str) -> list[str]:
    """What the published JSON Schema says of a file (the YAML read as plain data)."""
    return [f"{list(e.absolute_path)}: {e.message}" for e in SCHEMA.iter_errors(YAML(typ="safe").load(text))]


def problems(text: str | bytes) -> list[tuple[int, int, str, str]]:
    """(line, column, path, message) of every problem ``load`` raises for ``text``."""
    with pytest.raises(ConfigError) as error:
        load(text, "deploy.yaml")
    assert all(p.file == "deploy.yaml" for p in error.value.problems)
    return [(p.line, p.column, p.path, p.message) for p in error.value.problems]


def at(text: str, needle: str, nth: int = 1) -> tuple[int, int]:
    """(line, column) from 1 where the ``nth`` ``needle`` starts in ``text``."""
    start = -1
    for _ in range(nth):
        start = text.index(needle, start + 1)
    before = text[:start]
    return (before.count("\n") + 1, start - before.rfind("\n"))


# -- the guide's four options ------------------------------------------------------------------------


def test_the_example_files_are_the_guides_four_options() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(OPTIONS)


@pytest.mark.parametrize("file", sorted(OPTIONS))
def test_an_example_file_is_what_its_script_builds(file: str) -> None:
    loaded = load((EXAMPLES / file).read_text(), file)
    assert loaded == example(OPTIONS[file]).DEPLOYMENT
    assert load(dump(loaded)) == loaded
    assert loaded.table() is not None  # nothing in it is refused: it can be applied as it is


def test_option_1a_is_a_checked_dr_service_with_an_hours_persistence() -> None:
    (service,) = load((EXAMPLES / "option-1a.yaml").read_text()).services
    assert isinstance(service, CheckedService) and isinstance(service.check, TCPCheck)
    assert str(service.key) == "-t 192.168.2.202:8080" and service.service.persistence == Persistence(3600)
    assert {rs.forward.value for rs in service.service.real_servers} == {"dr"}


# -- problems: where, and all of them ----------------------------------------------------------------


def test_a_problem_names_its_line_column_and_path() -> None:
    text = """\
services:
  - protocol: tcp
    address: 192.0.2.10
    port: 80
    real_servers:
      - {address: 198.51.100.1, port: 80}
      - {address: 198.51.100.2, port: 80}
      - {address: 198.51.100.3, port: 80, weight: 70000000000}
"""
    assert problems(text) == [
        (*at(text, "70000000000"), "services[0].real_servers[2].weight", "70000000000 is not a weight (0..2147483647)")]


def test_str_of_the_error_is_one_line_per_problem_in_the_files_order() -> None:
    text = "services:\n  - {protocol: tcp, address: 192.0.2.10, port: 0x1FFFF}\nrules: [{kind: mark, mark: 0}]\n"
    with pytest.raises(ConfigError) as error:
        load(text, "deploy.yaml")
    assert str(error.value).splitlines() == [
        "deploy.yaml:2:48: services[0].port: 131071 is not a port (0..65535)",
        "deploy.yaml:3:28: rules[0].mark: 0 is not a firewall mark (1..4294967295)",
    ]
    assert at(text, "0x1FFFF") == (2, 48) and at(text, "0}]") == (3, 28)
    assert isinstance(error.value, InvalidField)  # a ParseError, so callers that catch those catch it
    assert error.value.problems[0] == ConfigProblem("deploy.yaml", 2, 48, "services[0].port",
                                                    "131071 is not a port (0..65535)")


def test_every_problem_is_reported_at_once_across_objects_and_fields_of_one_object() -> None:
    text = """\
services:
  - protocol: tcp
    address: 192.0.2.10
    port: 80
    schedular: wlc
    persistence: {timeout: 0, netmask: 255.255.255.256}
    real_servers:
      - {address: 198.51.100.1, port: 80, weight: -1, u_threshold: x}
      - {address: 198.51.100.1, port: 80}
  - protocol: tcp
    address: 192.0.2.10
    port: 80
  - {protocol: tcp, address: 192.0.2.10, port: 80}
  - {fwmark: 1, port: 80}
rules:
  - {kind: mrak, mark: 1}
  - {kind: redirect, destination: 192.0.2.300, port: 99999}
timeouts: {tcp: 0, udp: 1.5}
backend: [sim]
"""
    found = problems(text)
    assert found == [
        (*at(text, "schedular"), "services[0].schedular",
         "is not a field of VirtualService (did you mean 'scheduler'?)"),
        (*at(text, "0, netmask"), "services[0].persistence.timeout",
         "0 is not a persistence timeout in seconds (1..2678400)"),
        (*at(text, "255.255.255.256"), "services[0].persistence.netmask",
         "'255.255.255.256' is not an IPv4 netmask or an IPv6 prefix length (1..128)"),
        (*at(text, "-1"), "services[0].real_servers[0].weight", "-1 is not a weight (0..2147483647)"),
        (*at(text, "x}"), "services[0].real_servers[0].u_threshold", "'x' is not a threshold (0..2147483647)"),
        (*at(text, "{protocol: tcp, address: 192.0.2.10"), "services[2]",
         "-t 192.0.2.10:80 appears twice (first as services[1])"),
        (*at(text, "80}", 3), "services[3].port", "80 must be 0 for a fwmark service"),
        (*at(text, "mrak"), "rules[0].kind", "'mrak' is not a kind of rule (did you mean 'mark'?)"),
        (*at(text, "192.0.2.300"), "rules[1].destination", "'192.0.2.300' is not an IPv4 address"),
        (*at(text, "99999"), "rules[1].port", "99999 is not a port (1..65535)"),
        (*at(text, "0, udp"), "timeouts.tcp", "0 is not a timeout in seconds (1..8589934)"),
        (*at(text, "1.5"), "timeouts.udp", "1.5 is not a timeout in seconds (1..8589934)"),
        (*at(text, "[sim]"), "backend", "['sim'] is not a backend's name or a mapping (name:, options:)"),
    ]


def test_a_checked_service_reports_its_services_and_its_checks_problems_together() -> None:
    text = """\
services:
  - protocol: tcp
    address: 192.0.2.10
    port: 80
    real_servers: [{address: 198.51.100.1, port: 80}]
    health:
      check: {kind: http, path: health, status: [200, 700]}
      checks: {"198.51.100.9:80": tcp}
      policy: {interval: 0, fall: 0, delay_loop: 6}
      action: explode
"""
    assert problems(text) == [
        (*at(text, "health, status"), "services[0].health.check.path",
         "'health' is not a request path (starts with /, no spaces)"),
        (*at(text, "[200"), "services[0].health.check.status", "700 is not an HTTP status code (100..599)"),
        (*at(text, "0, fall"), "services[0].health.policy.interval", "0 is not a number of seconds > 0.0"),
        (*at(text, "0, delay"), "services[0].health.policy.fall", "0 is not a count >= 1"),
        (*at(text, "delay_loop"), "services[0].health.policy.delay_loop",
         "is not a field of Policy (interval, timeout, rise, fall, retry, delay_before_retry, initial, jitter)"),
    ]
    # The object-wide checks run once its fields are good: the second look finds the rest.
    fixed = text.replace("path: health", "path: /health").replace("700", "204").replace(
        "interval: 0, fall: 0, delay_loop: 6", "interval: 6")
    assert problems(fixed) == [
        (*at(fixed, "explode"), "services[0].health.action", "'explode' is not one of: quiesce, remove, drain")]
    drain = fixed.replace("explode", "drain")
    assert problems(drain) == [
        (*at(drain, "{\"198"), "services[0].health.checks", "'198.51.100.9:80' is not a real server of the service")]


def test_a_part_that_does_not_fit_its_service_is_named_at_its_own_field() -> None:
    text = """\
services:
  - protocol: tcp
    address: 192.0.2.10
    port: 80
    real_servers:
      - {address: 198.51.100.1, port: 80}
      - {address: 198.51.100.2, port: 8080, forward: dr}
  - fwmark: 1
    real_servers: [{address: 198.51.100.1, port: 0}]
    health: {check: tcp, fallback: {address: "2001:db8::1", port: 0}}
"""
    assert problems(text) == [
        (*at(text, "8080"), "services[0].real_servers[1].port",
         "8080 differs from the virtual port 80: dr cannot change ports"),
        (*at(text, '"2001'), "services[1].health.fallback.address",
         "'2001:db8::1' is IPv6 under an IPv4 dr service -f 1 (only tunnel mixes families)"),
    ]
    fixed = text.replace('"2001:db8::1"', "198.51.100.9")
    assert problems(fixed)[1] == (*at(fixed, "tcp, fallback"), "services[1].health.check.port",
                                  "must be set: real server 198.51.100.1 has port 0")


@pytest.mark.parametrize(("text", "want"), [
    ("services: [{protocol: tcp, address: 192.0.2.1, port: 80}]\nservices: []\n",
     [(2, 1, "", "'services' is given twice (first on line 1)")]),
    ("services:\n\t- {}\n", [(2, 1, "", "is not YAML: found character '\\t' that cannot start any token "
                                      "(while scanning for the next token)")]),
    ("services: [{protocol: tcp\n", [(2, 1, "", "is not YAML: expected ',' or '}', but got '<stream end>' "
                                               "(while parsing a flow mapping)")]),
    ("", [(1, 1, "", "is empty: a deployment is a mapping of services:, rules:, ... ({} for nothing)")]),
    ("- services\n", [(1, 1, "", "['services'] is not a mapping (the fields of Deployment)")]),
    (b"services: []\n\xff", [(2, 1, "", "is not UTF-8 (byte 14 of the file)")]),
    ("services: [{protocol: tcp, address: 192.0.2.1, port: \uff18\uff10}]",
     [(1, 54, "services[0].port", "'\uff18\uff10' is not a port (0..65535)")]),
    ("services: [{protocol: tcp, address: 192.0.2.1, port: 1" + "0" * 400 + "}]",
     [(1, 54, "services[0].port", f"1{'0' * 400} is not a port (0..65535)")]),
    ("services: [{protocol: tcp, address: 2001-01-01, port: 80}]",
     [(1, 37, "services[0].address", "'2001-01-01' is a date: write it in quotes if it is text")]),
    ("services: [{protocol: !tcp tcp, address: 192.0.2.1, port: 80}]",
     [(1, 23, "services[0].protocol", "has a YAML tag or type lbcore does not read (!tcp)")]),
    ("a: &a [*a]\nservices: *a\n", [(1, 1, "a", "is not a field of Deployment (did you mean 'ha'?)"),
                                    (1, 4, "services[0]", "None is not a mapping (the fields of VirtualService)")]),
    ("services: [[" + "[" * 1000 + "]" * 1000 + "]]",
     [(1, 1, "", "is not read: its lists and mappings nest too deep")]),
], ids=["duplicate-key", "tab", "syntax", "empty", "list", "bytes", "full-width", "huge-int", "date", "tag",
        "alias-loop", "deep"])
def test_odd_input_is_a_config_error_with_its_place(text: str | bytes, want: list[tuple[int, int, str, str]]) -> None:
    assert problems(text) == want


def test_a_superscript_digit_is_an_invalid_field_in_the_model_and_a_problem_in_the_file() -> None:
    # str.isdigit() takes "²", which int() refuses: the model once let that ValueError out.
    with pytest.raises(InvalidField):
        Persistence(netmask="\u00b2")
    with pytest.raises(InvalidField):
        Sysctls().with_value("conn_reuse_mode", "\u00b2")
    text = "services: [{protocol: tcp, address: 192.0.2.1, port: 80, persistence: {netmask: \"\u00b2\"}}]"
    assert problems(text) == [(*at(text, '"\u00b2'), "services[0].persistence.netmask",
                               "'\u00b2' is not an IPv4 netmask or an IPv6 prefix length (1..128)")]


def test_aliases_that_expand_without_end_are_refused_not_walked() -> None:
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
    text = "\n".join(lines).replace("a0:", "x0:") + "\nbackend: {name: sim, options: {o: *a8}}\n"
    found = problems(text)
    assert found[-1][2:] == ("backend.options", "has more than 200000 values (aliases expand it without end?)")


def test_anchors_merge_keys_and_the_ipvsadm_and_keepalived_words_for_forwarding_read_as_the_model() -> None:
    text = """\
services:
  - &web {protocol: tcp, address: 192.0.2.10, port: 80, real_servers: [{address: 198.51.100.1, port: 80,
                                                                          forward: masquerading}]}
  - <<: *web
    port: 443
    real_servers: [{address: 198.51.100.1, port: 443, forward: DR}, {address: 198.51.100.2, port: 443, forward: ipip}]
"""
    web, tls = load(text).services
    assert isinstance(web, VirtualService) and isinstance(tls, VirtualService)
    assert [rs.forward.value for rs in (*web.real_servers, *tls.real_servers)] == ["nat", "dr", "tunnel"]
    assert "forward: tunnel" in dump(load(text)) and "masquerading" not in dump(load(text))


@pytest.mark.parametrize("text", [b"services: []\n", "\ufeffservices: []\n".encode(), "{}"])
def test_bytes_and_an_empty_mapping_read(text: str | bytes) -> None:
    assert load(text) == Deployment()


def test_a_non_text_argument_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="is not text"):
        load(42, "x.yaml")  # type: ignore[arg-type]


# -- writing ------------------------------------------------------------------------------------------


def test_dump_writes_only_what_differs_from_the_defaults_in_the_models_order() -> None:
    service = VirtualService("tcp", "192.0.2.10", 80, real_servers=[RealServer("198.51.100.1", 80, weight=2)])
    assert dump(Deployment()) == "{}\n"
    assert dump(Deployment(services=[service], timeouts=Timeouts(tcp=60))) == """\
services:
  - protocol: tcp
    address: 192.0.2.10
    port: 80
    real_servers:
      - address: 198.51.100.1
        port: 80
        weight: 2
timeouts:
  tcp: 60
"""


def test_dump_writes_a_check_without_fields_as_its_kind_and_a_backend_without_options_as_its_name() -> None:
    service = VirtualService("tcp", "192.0.2.10", 80, real_servers=[RealServer("198.51.100.1", 80)])
    text = dump(Deployment(services=[CheckedService(service=service, check=SMTPCheck())],
                           backend=BackendChoice(name="ipvs+iptables")))
    assert "    check: smtp\n" in text and "backend: ipvs+iptables\n" in text


def test_dump_refuses_what_is_not_a_deployment() -> None:
    with pytest.raises(InvalidField):
        dump([])  # type: ignore[arg-type]


# -- the JSON Schema and the reference ----------------------------------------------------------------


def test_the_published_schema_is_the_generated_one() -> None:
    # Regenerate with the command in docs/deployment.md when the model changes.
    published = (ROOT / "docs" / "deployment.schema.json").read_text()
    assert published == json.dumps(json_schema(), indent=2) + "\n"
    jsonschema.Draft202012Validator.check_schema(json.loads(published))


@pytest.mark.parametrize("file", sorted(OPTIONS))
def test_an_example_file_validates_against_the_schema(file: str) -> None:
    assert schema_errors((EXAMPLES / file).read_text()) == []


def test_the_schema_refuses_what_the_loader_refuses_field_by_field() -> None:
    text = "services: [{protocol: tcpx, address: 192.0.2.1, port: 70000, wieght: 1}]\nbackend: 5\n"
    assert [e.split(":")[0] for e in schema_errors(text)] == [
        "['services', 0, 'protocol']", "['services', 0, 'port']", "['services', 0]", "['backend']"]
    assert [p[2] for p in problems(text)] == ["services[0].protocol", "services[0].port", "services[0].wieght",
                                              "backend"]


def test_the_reference_names_every_object_and_field_of_the_file_with_a_meaning() -> None:
    objects = reference()
    classes = {o.cls for o in objects}
    assert {c for kinds in KINDS.values() for c in kinds.values()} <= classes
    assert {Deployment, VirtualService, CheckedService, RealServer, Persistence, Tunnel, Policy, Timeouts, Sysctls,
            BackendChoice, FloatingIP, Host, HAPair, Node, DaemonSettings} <= classes
    for obj in objects:
        names = [f.name for f in obj.fields if f.name not in ("kind", "health")]
        assert names == [f.name for f in attrs.fields(obj.cls) if f.init and f.name != "service"], obj.where
        assert all(f.type and f.default and f.description for f in obj.fields if f.name != "kind"), obj.where
    rs = next(o for o in objects if o.cls is RealServer)
    assert rs.where == "services[].real_servers[]"
    weight = next(f for f in rs.fields if f.name == "weight")
    assert (weight.type, weight.default) == ("integer 0..2147483647", "1")


# -- round trips and mutations --------------------------------------------------------------------------

NAMES = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=12)
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), min_size=1, max_size=20)
SECONDS = st.floats(min_value=0.001, max_value=1e6, allow_nan=False, allow_infinity=False) | st.integers(1, 10**6)
IPV4 = st.integers(0x01000000, 0xDFFFFFFF).map(ipaddress.IPv4Address).filter(
    lambda a: not (a.is_multicast or a.is_unspecified))
IPV6 = st.integers(1, 2**128 - 1).map(ipaddress.IPv6Address).filter(lambda a: not (a.is_multicast or a.is_unspecified))
NETWORK = st.builds(lambda a, n: ipaddress.IPv4Network((int(a) >> (32 - n) << (32 - n), n)), IPV4, st.integers(8, 32))


@st.composite
def real_servers(draw: st.DrawFn, family: int, port: int, fwmark: bool) -> list[RealServer]:
    found: dict[tuple[object, int], RealServer] = {}
    for _ in range(draw(st.integers(0, 4))):
        forward = draw(st.sampled_from(["dr", "nat", "tunnel"]))
        if forward == "tunnel":
            address = draw(IPV4 | IPV6)
            tunnel = draw(st.sampled_from([Tunnel(), Tunnel("gre"), Tunnel("gre", checksum="csum"),
                                           Tunnel("gue", port=draw(st.integers(1, 65535)), checksum="remcsum")]))
        else:
            address, tunnel = draw(IPV4 if family == 4 else IPV6), None
        rs_port = draw(st.integers(0, 65535)) if fwmark or forward == "nat" else port
        u = draw(st.integers(0, 2**31 - 1))
        rs = RealServer(address, rs_port, weight=draw(st.integers(0, 2**31 - 1)), forward=forward,
                        u_threshold=u, l_threshold=draw(st.integers(0, u)), tunnel=tunnel)
        found[rs.key] = rs
    return list(found.values())


@st.composite
def services(draw: st.DrawFn) -> VirtualService:
    scheduler = draw(st.sampled_from(["rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "dh", "sh", "mh", "lblc",
                                      "lblcr", "twos"]))
    flags = draw(st.sets(st.sampled_from([f"{scheduler}-fallback", f"{scheduler}-port"]))) if scheduler in (
        "sh", "mh") else set()
    family = draw(st.sampled_from([4, 6]))
    masks = st.sampled_from(["255.255.255.0", "255.255.0.0"]) if family == 4 else st.integers(1, 128)
    netmask = draw(st.none() | masks)
    persistence = draw(st.none() | st.builds(Persistence, st.integers(1, 2678400), st.just(netmask),
                                             st.sampled_from([None, "sip"])))
    if draw(st.booleans()):
        fwmark = draw(st.integers(1, 2**32 - 1))
        return VirtualService(fwmark=fwmark, family=family, scheduler=scheduler, flags=flags, persistence=persistence,
                              one_packet=draw(st.booleans()),
                              real_servers=draw(real_servers(family, 0, fwmark=True)))
    protocol = draw(st.sampled_from(["tcp", "udp", "sctp"]))
    port = draw(st.integers(0 if persistence else 1, 65535))
    return VirtualService(protocol, draw(IPV4 if family == 4 else IPV6), port, scheduler=scheduler, flags=flags,
                          persistence=persistence, one_packet=protocol == "udp" and draw(st.booleans()),
                          real_servers=draw(real_servers(family, port, fwmark=False)))


def base(draw: st.DrawFn) -> dict[str, Any]:
    return {"address": draw(st.none() | IPV4 | IPV6), "timeout": draw(st.none() | SECONDS)}


@st.composite
def checks(draw: st.DrawFn, needs_port: bool) -> Any:
    kind = draw(st.sampled_from(["tcp", "http", "udp", "dns", "smtp", "ping", "exec", "fixed"]))
    common = base(draw)
    port = draw(st.integers(1, 65535) if needs_port else st.none() | st.integers(1, 65535))
    if kind == "ping":
        return PingCheck(**common, size=draw(st.integers(0, 65507)))
    common["port"] = port
    if kind == "http":
        https = draw(st.booleans())
        return HTTPCheck(**common, method=draw(st.sampled_from(["GET", "HEAD", "POST"])),
                         path="/" + draw(st.text(string.ascii_letters + "/?=&%", max_size=10)),
                         host=draw(st.none() | TEXT), status=draw(st.sets(st.integers(100, 599), min_size=1)),
                         body=draw(st.sampled_from([None, "ok", "^up$", "[a-z]+ \\d"])), https=https,
                         sni=draw(st.none() | TEXT) if https else None, verify=https and draw(st.booleans()))
    if kind == "udp":
        return UDPCheck(**common, payload=draw(st.binary(min_size=1, max_size=10)),
                        reply=draw(st.sampled_from([None, b"pong", b"\\x00+"])))
    if kind == "dns":
        return DNSCheck(**common, name=draw(st.sampled_from(["example.org", "localhost", "a.b.c."])),
                        type=draw(st.sampled_from(["A", "AAAA", "SOA", "TXT"])))
    if kind == "exec":
        return ExecCheck(**common, command=draw(st.lists(TEXT, min_size=1, max_size=3)))
    if kind == "fixed":
        return FixedCheck(**common, state=draw(st.sampled_from(["up", "down"])))
    return (TCPCheck if kind == "tcp" else SMTPCheck)(**common)


@st.composite
def checked(draw: st.DrawFn, service: VirtualService) -> CheckedService:
    needs_port = service.fwmark is not None or any(rs.port == 0 for rs in service.real_servers)
    endpoints = [rs.endpoint for rs in service.real_servers]
    chosen = draw(st.lists(st.sampled_from(endpoints), unique=True, max_size=2)) if endpoints else []
    policy = Policy(interval=draw(SECONDS), timeout=draw(SECONDS), rise=draw(st.integers(1, 10)),
                    fall=draw(st.integers(1, 10)), retry=draw(st.integers(0, 3)),
                    delay_before_retry=draw(SECONDS | st.just(0)), initial=draw(st.sampled_from(["up", "down"])),
                    jitter=draw(SECONDS | st.just(0)))
    return CheckedService(service=service, check=draw(checks(needs_port)),
                          checks={e: draw(checks(needs_port)) for e in chosen}, policy=policy,
                          action=draw(st.sampled_from(["quiesce", "remove", "drain"])), drain_timeout=draw(SECONDS),
                          drain_poll=draw(SECONDS), quorum=draw(st.integers(0, 2**31 - 1)),
                          hysteresis=draw(st.integers(0, 100)))


INTERFACE = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=15)
RULES = st.one_of(
    st.builds(FirewallMark, st.integers(1, 2**32 - 1), st.sets(st.sampled_from(["tcp", "udp", "sctp"]), min_size=1),
              ports=st.lists(st.integers(1, 65535), max_size=3), destinations=st.lists(NETWORK, max_size=2),
              sources=st.lists(NETWORK, max_size=2), except_destinations=st.lists(NETWORK, max_size=2)),
    st.builds(AutoNat, INTERFACE, st.lists(NETWORK, max_size=2), to_source=st.none() | IPV4),
    st.builds(Redirect, IPV4, protocol=st.sampled_from(["tcp", "udp"]), port=st.none() | st.integers(1, 65535),
              to_port=st.none() | st.integers(1, 65535)),
    st.builds(PolicyRoute, st.integers(1, 2**32 - 1), st.integers(1, 252), via=st.none() | IPV4),
    st.builds(LoopbackVIP, IPV4),
)


def unique(items: list[Any]) -> list[Any]:
    return list({item.key: item for item in items}.values())


@st.composite
def deployments(draw: st.DrawFn) -> Deployment:
    found: list[Any] = []
    for service in unique(draw(st.lists(services(), max_size=3))):
        found.append(draw(checked(service)) if draw(st.booleans()) else service)
    options = draw(st.dictionaries(NAMES, st.integers() | TEXT | st.lists(TEXT, max_size=2), max_size=2))
    nodes = draw(st.lists(NAMES, min_size=2, max_size=2, unique=True))
    return Deployment(
        services=found, rules=unique(draw(st.lists(RULES, max_size=4))),
        timeouts=draw(st.none() | st.builds(Timeouts, st.integers(1, 8589934), st.integers(1, 8589934))),
        sysctls=draw(st.none() | st.builds(Sysctls, st.booleans(), st.booleans(), st.integers(0, 3))),
        backend=BackendChoice(name=draw(st.sampled_from(["sim", "ipvs", "ipvs+iptables"])), options=options),
        floating_ips=draw(st.lists(st.builds(FloatingIP, address=st.builds(
            lambda a, n: ipaddress.IPv4Interface((a, n)), IPV4, st.integers(1, 32)), interface=INTERFACE), max_size=2)),
        hosts=draw(st.lists(st.builds(Host, name=NAMES, rules=st.lists(RULES, max_size=2).map(unique)), max_size=2)),
        ha=draw(st.none() | st.builds(HAPair, nodes=st.just([Node(name=nodes[0], address=draw(IPV4)),
                                                            Node(name=nodes[1], address=draw(IPV4), priority=50)]),
                                      interface=INTERFACE, virtual_router_id=st.integers(1, 255),
                                      sync=st.booleans())),
        daemon=draw(st.none() | st.builds(DaemonSettings, interval=SECONDS, metrics=st.none() | TEXT.filter(
            str.isprintable), status=st.none() | TEXT.filter(str.isprintable))),
    )


@settings(max_examples=FUZZ, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(deployments())
def test_a_random_deployment_written_and_read_back_is_equal(deployment: Deployment) -> None:
    text = dump(deployment)
    assert load(text) == deployment
    assert dump(load(text)) == text
    assert schema_errors(text) == []


VALID = [(EXAMPLES / name).read_text() for name in sorted(OPTIONS)]


@st.composite
def mutations(draw: st.DrawFn) -> str:
    """A valid file with one to three edits: a line deleted or repeated, a scalar replaced, a cut, a character."""
    text = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 3))):
        lines = text.splitlines(keepends=True)
        edit = draw(st.sampled_from(["delete", "duplicate", "scalar", "truncate", "insert"]))
        n = draw(st.integers(0, max(len(lines) - 1, 0)))
        if edit == "delete" and lines:
            del lines[n]
        elif edit == "duplicate" and lines:
            lines.insert(n, lines[n])
        elif edit == "scalar" and lines:
            scalars = list(re.finditer(r"(?<=: )[^\s,{}\[\]]+", lines[n]))
            if scalars:
                match = draw(st.sampled_from(scalars))
                new = draw(st.integers(-2**70, 2**70).map(str) | st.text(max_size=8) | st.sampled_from(
                    ["null", "~", "true", "[]", "{}", "&a x", "*a", "!!binary AAAA", "'", '"', "\uff11", ".inf", "-"]))
                lines[n] = lines[n][: match.start()] + new + lines[n][match.end():]
        elif edit == "truncate":
            text = "".join(lines)
            lines = [text[: draw(st.integers(0, len(text)))]]
        else:
            text = "".join(lines)
            at = draw(st.integers(0, len(text)))
            lines = [text[:at], draw(st.sampled_from(["\t", "\x00", ":", "- ", "\n  ", "{", "#", "\ufeff", "&b "])),
                     text[at:]]
        text = "".join(lines)
    return text


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations())
def test_a_mutated_file_reads_or_raises_only_config_errors_with_their_places(text: str) -> None:
    try:
        deployment = load(text, "f.yaml")
    except ConfigError as error:
        assert error.problems
        lines = text.splitlines() or [""]
        for problem in error.problems:
            assert problem.file == "f.yaml" and problem.message
            assert 1 <= problem.line <= len(lines) + 1 and problem.column >= 1, problem
        assert len(str(error).splitlines()) >= len(error.problems)
    else:
        assert isinstance(deployment, Deployment)
        assert load(dump(deployment)) == deployment
