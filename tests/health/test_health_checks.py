"""Check definitions and policy: validation that names class, field and value; the DNS wire format."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from lbcore import RealServer, VirtualService
from lbcore.errors import InvalidField
from lbcore.health import (
    CheckedService,
    DNSCheck,
    ExecCheck,
    HealthState,
    HTTPCheck,
    Policy,
    TCPCheck,
    UDPCheck,
    probe_for,
)
from lbcore.health._dns import answers, query

REFUSED = [
    {"desc": "interval 0", "make": lambda: Policy(interval=0), "want": ("Policy", "interval")},
    {"desc": "negative timeout", "make": lambda: Policy(timeout=-1), "want": ("Policy", "timeout")},
    {"desc": "fall 0", "make": lambda: Policy(fall=0), "want": ("Policy", "fall")},
    {"desc": "rise as text", "make": lambda: Policy(rise="2"), "want": ("Policy", "rise")},
    {"desc": "retry -1", "make": lambda: Policy(retry=-1), "want": ("Policy", "retry")},
    {"desc": "initial sideways", "make": lambda: Policy(initial="sideways"), "want": ("Policy", "initial")},
    {"desc": "infinite jitter", "make": lambda: Policy(jitter=float("inf")), "want": ("Policy", "jitter")},
    {"desc": "port 70000", "make": lambda: TCPCheck(port=70000), "want": ("TCPCheck", "port")},
    {"desc": "address not one", "make": lambda: TCPCheck(address="web"), "want": ("TCPCheck", "address")},
    {"desc": "method", "make": lambda: HTTPCheck(method="BREW"), "want": ("HTTPCheck", "method")},
    {"desc": "relative path", "make": lambda: HTTPCheck(path="health"), "want": ("HTTPCheck", "path")},
    {"desc": "status 700", "make": lambda: HTTPCheck(status=[200, 700]), "want": ("HTTPCheck", "status")},
    {"desc": "bad regex", "make": lambda: HTTPCheck(body="(unclosed"), "want": ("HTTPCheck", "body")},
    {"desc": "bytes body regex", "make": lambda: HTTPCheck(body=b"ok"), "want": ("HTTPCheck", "body")},
    {"desc": "host with newline", "make": lambda: HTTPCheck(host="a\r\nX: y"), "want": ("HTTPCheck", "host")},
    {"desc": "sni without https", "make": lambda: HTTPCheck(sni="web.test"), "want": ("HTTPCheck", "sni")},
    {"desc": "text payload", "make": lambda: UDPCheck(payload="ping"), "want": ("UDPCheck", "payload")},
    {"desc": "text reply regex", "make": lambda: UDPCheck(reply="pong"), "want": ("UDPCheck", "reply")},
    {"desc": "dns type", "make": lambda: DNSCheck(type="ANY"), "want": ("DNSCheck", "type")},
    {"desc": "dns name", "make": lambda: DNSCheck(name="a..b"), "want": ("DNSCheck", "name")},
    {"desc": "empty command", "make": lambda: ExecCheck(command=[]), "want": ("ExecCheck", "command")},
    {"desc": "check timeout 0", "make": lambda: TCPCheck(timeout=0), "want": ("TCPCheck", "timeout")},
]


@pytest.mark.parametrize("case", REFUSED, ids=[c["desc"] for c in REFUSED])
def test_invalid_fields_are_refused_naming_class_and_field(case: dict[str, object]) -> None:
    with pytest.raises(InvalidField) as info:
        case["make"]()  # type: ignore[operator]
    assert (info.value.owner, info.value.field) == case["want"]
    assert str(info.value).startswith(f"{info.value.owner}.{info.value.field}: ")


def test_checks_are_values_converted_on_construction() -> None:
    check = HTTPCheck(status=[200, 204], address="192.0.2.1")
    assert check == HTTPCheck(status=frozenset({204, 200}), address=ipaddress.ip_address("192.0.2.1"))
    assert hash(check) == hash(HTTPCheck(status=(200, 204), address="192.0.2.1"))
    assert Policy(initial="down").initial is HealthState.DOWN
    assert ExecCheck(command=["ping", "-c1", "{address}"]).arguments(ipaddress.ip_address("::1"), 53) == [
        "ping", "-c1", "::1"]


def test_a_probe_targets_the_real_server_unless_the_check_overrides_it() -> None:
    rs = ipaddress.ip_address("198.51.100.1")
    policy = Policy(timeout=2.0)
    assert (probe_for(TCPCheck(), policy, rs, 80).address, probe_for(TCPCheck(), policy, rs, 80).port) == (rs, 80)
    other = probe_for(TCPCheck(address="192.0.2.9", port=8080, timeout=0.5), policy, rs, 80)
    assert (str(other.address), other.port, other.timeout) == ("192.0.2.9", 8080, 0.5)
    assert probe_for(TCPCheck(), policy, rs, 80).timeout == 2.0
    with pytest.raises(InvalidField):
        probe_for(TCPCheck(), policy, rs, 0)


def test_checked_service_refuses_a_fallback_that_is_one_of_its_real_servers() -> None:
    service = VirtualService(protocol="tcp", address="192.0.2.1", port=80, scheduler="rr",
                             real_servers=[RealServer("198.51.100.1", 80)])
    with pytest.raises(InvalidField) as info:
        CheckedService(service=service, check=TCPCheck(), fallback=RealServer("198.51.100.1", 80))
    assert (info.value.owner, info.value.field) == ("CheckedService", "fallback")
    with pytest.raises(InvalidField) as info:
        CheckedService(service=service, check=TCPCheck(), action="reboot")
    assert info.value.field == "action"


def test_dns_query_is_rfc_1035_wire_format() -> None:
    wire = query(0x1234, "www.example.org.", "AAAA")
    assert wire == (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
                    b"\x03www\x07example\x03org\x00\x00\x1c\x00\x01")


def test_dns_answers_reads_only_a_noerror_response_to_our_query() -> None:
    def header(ident: int, flags: int, ancount: int) -> bytes:
        return struct.pack("!HHHHHH", ident, flags, 1, ancount, 0, 0)

    assert answers(7, header(7, 0x8180, 2)) == 2
    assert answers(7, header(8, 0x8180, 2)) is None  # someone else's
    assert answers(7, header(7, 0x0100, 2)) is None  # a query, not a response
    assert answers(7, header(7, 0x8183, 0)) is None  # NXDOMAIN
    assert answers(7, b"\x00") is None


def test_the_package_docstring_example_runs() -> None:
    import doctest

    import lbcore.health

    failed, attempted = doctest.testmod(lbcore.health)
    assert attempted > 0 and failed == 0
