"""Hostile input gets a typed error naming the field and the value (issue 11's findings, one test each)."""

from __future__ import annotations

import ipaddress

import pytest

from lbcore import (
    Persistence,
    RealServer,
    Sysctls,
    Table,
    VirtualService,
)
from lbcore.errors import InvalidField, ParseError
from lbcore.formats.ipvsadm import dump_save, parse_command, parse_save
from lbcore.formats.trace import parse_trace
from lbcore.rules import AutoNat, Redirect, rule_from_text

VIP = "192.0.2.10"


def command_error(line: str) -> ParseError:
    with pytest.raises(ParseError) as caught:
        parse_command(line, Table(), "rules line 4", 4)
    assert caught.value.line == 4
    return caught.value


def test_superscript_two_weight_is_parse_error() -> None:
    line = f"-a -t {VIP}:80 -r 10.0.0.2 -w \u00b2"
    error = command_error(line)
    assert (error.field, error.value, error.column) == ("weight", "\u00b2", line.index("\u00b2") + 1)


@pytest.mark.parametrize("line, field", [
    (f"-A -t {VIP}:\u00b2", "-t"),
    ("-A -f \u00b2", "-f"),
    (f"-A -t {VIP}:80 -p \u00b2", "-p"),
    (f"-A -t {VIP}:80 -p 60 -M \u00b2", "Persistence.netmask"),
    ("--set \u00b2 1 1", "--set tcp"),
    ("--set 1 1 \u00b2", "--set udp"),
    (f"-a -t {VIP}:80 -r 10.0.0.2:\u00b2 -m", "-r"),
    (f"-a -t {VIP}:80 -r 10.0.0.2 -x \u00b2", "u_threshold"),
    (f"-a -t {VIP}:80 -r 10.0.0.2 -i --tun-type gue --tun-port \u00b2", "tun_port"),
])
def test_superscript_two_anywhere_is_parse_error(line: str, field: str) -> None:
    error = command_error(line)
    assert error.field == field and "\u00b2" in str(error.value)
    assert error.column is not None and line[error.column - 1:].startswith(str(error.value).split(":")[0][:1])


def test_arabic_indic_port_is_refused() -> None:
    error = command_error(f"-A -t {VIP}:\u0668\u0660")
    assert error.field == "-t" and error.column == 7
    with pytest.raises(ParseError):
        parse_trace("0 open a tcp 198.51.100.1:\u0668\u0660 192.0.2.10:80\n")
    with pytest.raises(ParseError):
        rule_from_text("redirect port=\u0668\u0660")


def test_full_width_fwmark_is_refused() -> None:
    assert command_error("-A -f \uff11").field == "-f"


def test_tun_type_gree_is_parse_error() -> None:
    line = f"-a -t {VIP}:80 -r 10.0.0.2 -i --tun-type gree"
    error = command_error(line)
    assert (error.field, error.value, error.column) == ("--tun-type", "gree", line.index("gree") + 1)


def test_parse_save_reports_line_and_column() -> None:
    with pytest.raises(ParseError) as caught:
        parse_save(f"-A -t {VIP}:80 -s rr\n\n-a -t {VIP}:80 -r 10.0.0.2:80 -m -w lots\n")
    assert (caught.value.line, caught.value.column, caught.value.owner) == (3, 42, "ipvsadm line 3")
    assert str(caught.value).endswith("(column 42)")


def test_parse_error_keeps_its_four_argument_constructor() -> None:
    error = ParseError("fmt line 1", "field", "v", "is bad")
    assert (error.line, error.column, str(error)) == (None, None, "fmt line 1.field: 'v' is bad")


def test_trace_mark_and_sysctl_take_ascii_digits_only() -> None:
    with pytest.raises(ParseError) as caught:
        parse_trace("0 open a tcp 198.51.100.1:1000 192.0.2.10:80 mark=\u00b2\n")
    assert (caught.value.field, caught.value.column) == ("mark", 46)
    with pytest.raises(InvalidField):
        Sysctls().with_value("lblc_expiration", "\u00b2")
    assert Sysctls().with_value("lblc_expiration", "600").lblc_expiration == 600


@pytest.mark.parametrize("name", ["eth\x000", "\u00e9" * 8, "eth 0", "eth/0", "a" * 16, "", "eth0:1", "eth\t0", "."])
def test_autonat_non_ascii_interface_is_refused(name: str) -> None:
    with pytest.raises(InvalidField) as caught:
        AutoNat(name)
    assert (caught.value.owner, caught.value.field, caught.value.value) == ("AutoNat", "out_interface", name)


def test_autonat_nul_interface_is_refused() -> None:
    with pytest.raises(InvalidField):
        AutoNat("eth\x000")
    assert AutoNat("a" * 15).out_interface == "a" * 15


@pytest.mark.parametrize("mask", ["255.255.255.255", ipaddress.IPv4Address("255.255.255.255"), 128, "128"])
def test_persistence_host_netmask_is_canonical(mask: object) -> None:
    assert Persistence(60, netmask=mask) == Persistence(60)


def test_persistence_host_netmask_reads_back_the_same() -> None:
    svc = VirtualService("tcp", VIP, 80, persistence=Persistence(60, netmask="255.255.255.255"))
    assert parse_save(dump_save([svc])).services[svc.key] == svc
    v6 = VirtualService("tcp", "2001:db8::1", 80, persistence=Persistence(60, netmask=128))
    assert parse_save(dump_save([v6])).services[v6.key] == v6
    assert Persistence(60, netmask=64).netmask == 64  # a real prefix stays


def test_persistence_as_int_is_invalid_field() -> None:
    with pytest.raises(InvalidField) as caught:
        VirtualService("tcp", VIP, 80, persistence=300)  # type: ignore[arg-type]
    assert (caught.value.owner, caught.value.field, caught.value.value) == ("VirtualService", "persistence", 300)


def test_real_servers_as_int_is_invalid_field() -> None:
    with pytest.raises(InvalidField) as caught:
        VirtualService("tcp", VIP, 80, real_servers=5)  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.value) == ("real_servers", 5)
    with pytest.raises(InvalidField):
        VirtualService("tcp", VIP, 80, real_servers={"a": 1})  # type: ignore[arg-type]


def test_ipv6_scope_id_is_refused() -> None:
    with pytest.raises(InvalidField) as caught:
        RealServer("fe80::1%eth0", 80)
    assert caught.value.field == "address" and "scope id" in caught.value.reason
    with pytest.raises(InvalidField):
        VirtualService("tcp", "fe80::1%eth0", 80)
    assert "scope id" in command_error("-A -t [fe80::1%eth0]:80").reason
    with pytest.raises(ParseError) as traced:
        parse_trace("0 open a tcp [fe80::1%eth0]:1000 192.0.2.10:80\n")
    assert "scope id" in traced.value.reason


def test_lblc_expiration_kernel_limit() -> None:
    # proc_dointvec_jiffies() refuses more than INT_MAX / HZ seconds (HZ 250: 8589934).
    assert Sysctls(lblc_expiration=8589934).lblc_expiration == 8589934
    for name in ("lblc_expiration", "lblcr_expiration"):
        with pytest.raises(InvalidField) as caught:
            Sysctls(**{name: 2**31 - 1})  # type: ignore[arg-type]
        assert caught.value.field == name and "8589934" in caught.value.reason


def test_redirect_ports_from_text_take_ascii_only() -> None:
    assert rule_from_text("redirect proto=tcp port=80 to=8080") == Redirect(None, port=80, to_port=8080)
    with pytest.raises(ParseError) as caught:
        rule_from_text("redirect proto=tcp port=80 to=\u00b2")
    assert (caught.value.field, caught.value.column) == ("to", 28)


def test_trace_rules_and_sysctl_errors_point_into_the_trace_line() -> None:
    from lbcore.formats.trace import replay
    from lbcore.sim import SimBackend

    for text, column in (("0 rules -A -t 10.0.0.1:80 -s rr -p \u00b2", 36), ("0 sysctl lblc_expiration \u00b2", 26),
                         ("0 rules   -A -t 10.0.0.1:\u0668\u0660", 17)):
        with pytest.raises(ParseError) as caught:
            replay(parse_trace(text), SimBackend().replayer())
        assert (caught.value.line, caught.value.column) == (1, column)


def test_replay_command_refuses_an_infinite_time(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    import pathlib

    from lbcore.cli import main

    trace = pathlib.Path(str(tmp_path)) / "inf.trace"
    trace.write_text("0 rules -A -t 192.0.2.10:80 -s rr\ninf close a\n")
    assert main(["replay", str(trace)]) == 2
    assert "line 2" in capsys.readouterr().err


def test_floating_ip_scope_id_is_refused() -> None:
    from lbcore import FloatingIP

    with pytest.raises(InvalidField) as caught:
        FloatingIP(address="fe80::1%eth0/64", interface="eth0")
    assert caught.value.field == "address" and "scope id" in caught.value.reason


def test_host_netmask_persistence_reapplies_as_no_op() -> None:
    from lbcore import Balancer
    from lbcore.sim import SimBackend

    svc = VirtualService("tcp", VIP, 80, persistence=Persistence(60, netmask="255.255.255.255"),
                         real_servers=[RealServer("198.51.100.11", 80)])
    lb = Balancer(SimBackend())
    assert lb.apply([svc])
    assert lb.apply([svc]) == []
    assert lb.read().services[svc.key] == svc
