"""The shared field checks: one refusal per kind of field, and a call's argument errors named."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from lbcore import InvalidArguments, InvalidField, RealServer, Redirect, VirtualService
from lbcore.health import CheckedService, HTTPCheck, Policy, TCPCheck
from lbcore.rules import AutoNat, FirewallMark, PolicyRoute
from lbcore.sim.profile import KernelProfile
from lbcore.sim.workload import Workload

REFUSED = [
    # (what, build, owner, field, text of the reason)
    ("a check port 0", lambda: TCPCheck(port=0), "TCPCheck", "port", "is not a port (1..65535)"),
    ("a redirect port 0", lambda: Redirect(None, port=0), "Redirect", "port", "is not a port (1..65535)"),
    ("an interval of nan", lambda: Policy(interval=float("nan")), "Policy", "interval",
     "is not a number of seconds > 0.0"),
    ("a drain timeout of 0", lambda: CheckedService(service=_service(), check=TCPCheck(), drain_timeout=0),
     "CheckedService", "drain_timeout", "is not a number of seconds > 0.0"),
    ("a negative quorum", lambda: CheckedService(service=_service(), check=TCPCheck(), quorum=-1),
     "CheckedService", "quorum", "is not a weight sum (0..2147483647)"),
    ("a rate of 0", lambda: Workload("192.0.2.10", 80, ["198.51.100.1"], rate=0), "Workload", "rate",
     "is not a number of sessions per second > 0.0"),
    ("a Kconfig value out of range", lambda: KernelProfile(mh_tab_index=18), "KernelProfile", "mh_tab_index",
     "is not in its Kconfig range (8..17)"),
    ("a multicast check address", lambda: TCPCheck(address="224.0.0.1"), "TCPCheck", "address",
     "is not a unicast address"),
    ("a state sideways", lambda: Policy(initial="sideways"), "Policy", "initial", "is not one of: up, down"),
]


def _service() -> VirtualService:
    return VirtualService(protocol="tcp", address="192.0.2.10", port=80,
                          real_servers=[RealServer("198.51.100.1", 80)])


@pytest.mark.parametrize("build, owner, field, reason", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_every_module_refuses_a_field_with_the_one_shared_check(
    build: Callable[[], object], owner: str, field: str, reason: str
) -> None:
    with pytest.raises(InvalidField) as error:
        build()
    assert (error.value.owner, error.value.field, error.value.reason) == (owner, field, reason)


def test_addresses_are_converted_the_same_way_everywhere() -> None:
    address = ipaddress.ip_address("192.0.2.1")
    assert TCPCheck(address="192.0.2.1").address == address
    assert Workload("192.0.2.1", 80, ["198.51.100.1"]).vip == address
    assert RealServer("192.0.2.1", 80).address == address


def test_a_keyword_only_field_given_by_position_is_named_with_how_to_write_it() -> None:
    with pytest.raises(InvalidArguments) as error:
        Redirect("192.0.2.10", "tcp", 8080)  # type: ignore[misc]
    assert (error.value.owner, error.value.field, error.value.value) == ("Redirect", "protocol", "tcp")
    assert str(error.value) == ("Redirect.protocol: 'tcp' is given by position, but protocol, port are "
                                "keyword-only: write Redirect(..., protocol='tcp', port=8080)")


def test_an_argument_error_is_an_invalid_field_and_a_type_error() -> None:
    with pytest.raises(InvalidField):
        VirtualService("tcp", "192.0.2.10", 80, None, 4)  # type: ignore[misc]
    with pytest.raises(TypeError) as error:
        VirtualService("tcp", "192.0.2.10", 80, None, 4)  # type: ignore[misc]
    assert isinstance(error.value, InvalidArguments) and error.value.field == "family"


def test_a_missing_required_field_is_named() -> None:
    with pytest.raises(InvalidArguments) as error:
        RealServer("198.51.100.1")  # type: ignore[call-arg]
    assert (error.value.owner, error.value.field) == ("RealServer", "port")
    assert str(error.value) == "RealServer.port: is required (RealServer needs port)"
    with pytest.raises(InvalidArguments) as error:
        PolicyRoute(mark=1)  # type: ignore[call-arg]
    assert str(error.value) == "PolicyRoute.table: is required (PolicyRoute needs table)"


def test_an_unknown_keyword_is_named_with_the_fields_there_are() -> None:
    with pytest.raises(InvalidArguments) as error:
        AutoNat("eth0", to="192.0.2.1")  # type: ignore[call-arg]
    assert (error.value.field, error.value.value) == ("to", "192.0.2.1")
    assert error.value.reason == "is not a field of AutoNat (out_interface, sources, to_source)"


def test_a_field_given_twice_is_named() -> None:
    with pytest.raises(InvalidArguments) as error:
        FirewallMark(1, mark=2)  # type: ignore[misc]
    assert (error.value.owner, error.value.field, error.value.value) == ("FirewallMark", "mark", 2)


def test_a_keyword_only_class_called_with_a_position_says_so() -> None:
    with pytest.raises(InvalidArguments) as error:
        HTTPCheck("GET")  # type: ignore[misc]
    assert error.value.field == "(positional)" and error.value.value == ("GET",)
    assert "HTTPCheck takes every argument by keyword (address, port, timeout, method," in str(error.value)


def test_a_type_error_from_inside_a_converter_is_not_renamed() -> None:
    # The arguments bind; the TypeError is the converter's own (tuple() of an int).
    with pytest.raises(TypeError) as error:
        Workload("192.0.2.1", 80, 5)  # type: ignore[arg-type]
    assert not isinstance(error.value, InvalidArguments)
