"""The model refuses bad input with typed errors that name the class, field and value."""

from __future__ import annotations

import ipaddress

import pytest

from lbcore import (
    InvalidField,
    Persistence,
    RealServer,
    Sysctls,
    Timeouts,
    Tunnel,
    VirtualService,
)


def refused(build, owner: str, field: str, value: object) -> InvalidField:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidField) as error:
        build()
    assert (error.value.owner, error.value.field, error.value.value) == (owner, field, value)
    assert f"{owner}.{field}" in str(error.value) and repr(value) in str(error.value)
    return error.value


def test_port_70000_is_refused_naming_the_field_and_value() -> None:
    err = refused(lambda: VirtualService(protocol="tcp", address="192.0.2.1", port=70000),
                  "VirtualService", "port", 70000)
    assert str(err) == "VirtualService.port: 70000 is not a port (0..65535)"


def test_unknown_scheduler_is_refused() -> None:
    refused(lambda: VirtualService(protocol="tcp", address="192.0.2.1", port=80, scheduler="fastest"),
            "VirtualService", "scheduler", "fastest")


def test_fwmark_service_with_a_port_is_refused() -> None:
    refused(lambda: VirtualService(fwmark=1, port=80), "VirtualService", "port", 80)


def test_port_zero_needs_persistence() -> None:
    refused(lambda: VirtualService(protocol="tcp", address="192.0.2.1", port=0), "VirtualService", "port", 0)
    assert VirtualService(protocol="tcp", address="192.0.2.1", port=0, persistence=Persistence()).port == 0


def test_dr_real_server_on_another_port_is_refused() -> None:
    refused(lambda: VirtualService(protocol="tcp", address="192.0.2.1", port=80,
                                   real_servers=[RealServer("198.51.100.1", 8080, forward="dr")]),
            "RealServer", "port", 8080)


def test_nat_real_server_may_use_another_port() -> None:
    svc = VirtualService(protocol="tcp", address="192.0.2.1", port=80,
                         real_servers=[RealServer("198.51.100.1", 8080, forward="nat")])
    assert svc.real_servers[0].port == 8080


def test_ipv6_real_server_under_an_ipv4_nat_service_is_refused() -> None:
    refused(lambda: VirtualService(protocol="tcp", address="192.0.2.1", port=80,
                                   real_servers=[RealServer("2001:db8::1", 80, forward="nat")]),
            "RealServer", "address", ipaddress.ip_address("2001:db8::1"))


def test_ipv6_real_server_under_an_ipv4_service_is_allowed_for_tunnel() -> None:
    svc = VirtualService(protocol="tcp", address="192.0.2.1", port=80,
                         real_servers=[RealServer("2001:db8::1", 80, forward="tunnel")])
    assert svc.real_servers[0].tunnel == Tunnel()


def test_weight_range_is_the_kernels() -> None:
    assert RealServer("198.51.100.1", 80, weight=2147483647).weight == 2**31 - 1
    refused(lambda: RealServer("198.51.100.1", 80, weight=2**31), "RealServer", "weight", 2**31)
    refused(lambda: RealServer("198.51.100.1", 80, weight=-1), "RealServer", "weight", -1)


def test_lower_threshold_above_upper_is_refused_even_when_upper_is_zero() -> None:
    refused(lambda: RealServer("198.51.100.1", 80, l_threshold=5), "RealServer", "l_threshold", 5)


def test_bad_address_is_refused() -> None:
    refused(lambda: RealServer("198.51.100.300", 80), "RealServer", "address", "198.51.100.300")
    refused(lambda: VirtualService(protocol="tcp", address="224.0.0.1", port=80), "VirtualService",
            "address", ipaddress.ip_address("224.0.0.1"))


def test_scheduler_flags_must_belong_to_the_scheduler() -> None:
    refused(lambda: VirtualService(protocol="tcp", address="192.0.2.1", port=80, scheduler="rr",
                                   flags=["sh-port"]), "VirtualService", "flags", "sh-port")


def test_one_packet_is_only_for_udp_or_fwmark() -> None:
    refused(lambda: VirtualService(protocol="tcp", address="192.0.2.1", port=80, one_packet=True),
            "VirtualService", "one_packet", True)
    assert VirtualService(protocol="udp", address="192.0.2.1", port=53, one_packet=True).one_packet


def test_persistence_netmask_must_match_the_family() -> None:
    refused(lambda: VirtualService(protocol="tcp", address="2001:db8::1", port=80,
                                   persistence=Persistence(netmask="255.255.255.0")),
            "VirtualService", "persistence", ipaddress.ip_address("255.255.255.0"))
    svc = VirtualService(protocol="tcp", address="2001:db8::1", port=80, persistence=Persistence(netmask=64))
    assert svc.persistence is not None and svc.persistence.prefix(6) == 64


def test_persistence_timeout_range_is_ipvsadms() -> None:
    refused(lambda: Persistence(timeout=0), "Persistence", "timeout", 0)
    refused(lambda: Persistence(timeout=2678401), "Persistence", "timeout", 2678401)


def test_tunnel_options_are_checked() -> None:
    refused(lambda: Tunnel(type="gue"), "Tunnel", "port", 0)
    refused(lambda: Tunnel(type="gre", checksum="remcsum"), "Tunnel", "checksum", "remcsum")
    refused(lambda: RealServer("198.51.100.1", 80, tunnel=Tunnel()), "RealServer", "tunnel", Tunnel())


def test_duplicate_real_servers_are_refused() -> None:
    refused(lambda: VirtualService(protocol="tcp", address="192.0.2.1", port=80,
                                   real_servers=[RealServer("198.51.100.1", 80)] * 2),
            "VirtualService", "real_servers", "198.51.100.1:80")


def test_service_key_prints_as_ipvsadm_names_it() -> None:
    assert str(VirtualService(protocol="tcp", address="192.0.2.1", port=80).key) == "-t 192.0.2.1:80"
    assert str(VirtualService(protocol="udp", address="2001:db8::1", port=53).key) == "-u [2001:db8::1]:53"
    assert str(VirtualService(fwmark=7, family=6).key) == "-f 7 -6"


def test_timeouts_and_sysctls_are_validated() -> None:
    refused(lambda: Timeouts(tcp=0), "Timeouts", "tcp", 0)
    assert Sysctls().with_value("expire_nodest_conn", "1").expire_nodest_conn is True
    refused(lambda: Sysctls().with_value("conn_reuse_mode", "7"), "Sysctls", "conn_reuse_mode", 7)
    refused(lambda: Sysctls().with_value("drop_entry", "1"), "Sysctls", "drop_entry", "1")
