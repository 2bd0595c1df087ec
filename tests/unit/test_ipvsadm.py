"""ipvsadm command lines and ipvsadm-save -n: read with ipvsadm's defaults, written in its order."""

from __future__ import annotations

import ipaddress

import pytest

from lbcore import (
    AddRealServer,
    AddService,
    EditRealServer,
    EditService,
    ForwardMethod,
    ParseError,
    Persistence,
    RealServer,
    SetTimeouts,
    Table,
    Timeouts,
    Tunnel,
    VirtualService,
)
from lbcore.formats.ipvsadm import dump_save, parse_command, parse_save

SAVED = """\
-A -t 10.0.0.1:80 -s wrr -p 360 -M 255.255.255.0
-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 4
-a -t 10.0.0.1:80 -r 10.0.0.3:80 -g -w 1
-A -u 10.0.0.1:53 -s rr -o
-a -u 10.0.0.1:53 -r 10.0.0.9:5353 -m -w 1
-A -t [2001:db8::1]:443 -s mh -b mh-fallback,mh-port
-a -t [2001:db8::1]:443 -r [2001:db8::2]:443 -i -w 2 --tun-type gue --tun-port 6080 --tun-remcsum
-A -f 1 -s sh -b sh-fallback,sh-port
-a -f 1 -r 10.0.0.3:0 -m -w 1
-A -f 2 -6 -s wlc -p 60 -M 64
"""


def test_a_saved_config_round_trips_exactly() -> None:
    assert dump_save(parse_save(SAVED)) == SAVED


def test_save_orders_services_as_ipvsadm_does_with_its_wrapping_comparator() -> None:
    table = parse_save("-A -t 10.0.0.2:80 -s rr\n-A -t 200.0.0.1:80 -s rr\n-A -t 10.0.0.1:80 -s rr\n")
    # ipvsadm compares (int)(a - b): 10.x - 200.x wraps positive, so 10.x sorts after 200.x.
    assert [line.split()[2] for line in dump_save(table).splitlines()] == [
        "200.0.0.1:80", "10.0.0.1:80", "10.0.0.2:80"
    ]


def test_thresholds_are_not_saved_unless_asked() -> None:
    table = parse_save("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2:80 -m -x 10 -y 5\n")
    assert "-x" not in dump_save(table)
    assert dump_save(table, thresholds=True).splitlines()[1].endswith("-m -w 1 -x 10 -y 5")


def test_persistent_without_a_value_is_360_seconds() -> None:
    (op,) = parse_command("-A -t 10.0.0.1:80 -s rr -p", Table())
    assert op.service.persistence == Persistence(timeout=360)  # type: ignore[union-attr]


def test_a_command_pasted_from_the_guide_with_its_leading_ipvsadm_is_read() -> None:
    guide = "ipvsadm -A -t 192.168.2.202:8080 -s wlc -p 3600"
    assert parse_command(guide, Table()) == parse_command(guide.removeprefix("ipvsadm "), Table()) == [
        AddService(VirtualService("tcp", "192.168.2.202", 8080, scheduler="wlc", persistence=Persistence(3600)))]
    assert parse_command("/sbin/ipvsadm --set 0 30 0", Table(timeouts=Timeouts())) == [
        SetTimeouts(Timeouts(900, 30, 300))]


def test_a_rules_file_of_pasted_commands_is_read_like_a_saved_one() -> None:
    pasted = "".join(f"ipvsadm {line}\n" for line in SAVED.splitlines())
    assert dump_save(parse_save(pasted)) == SAVED


def test_edit_server_sends_every_field_so_a_forgotten_m_means_dr() -> None:
    table = parse_save("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2:80 -m\n")
    (op,) = parse_command("-e -t 10.0.0.1:80 -r 10.0.0.2:80 -w 3", table)
    assert op == EditRealServer(op.key, RealServer("10.0.0.2", 80, weight=3))  # type: ignore[union-attr]
    assert op.real_server.forward is ForwardMethod.DR  # type: ignore[union-attr]


def test_edit_service_without_scheduler_switches_to_wlc_and_drops_persistence() -> None:
    (op,) = parse_command("-E -t 10.0.0.1:80", Table())
    assert op == EditService(VirtualService(protocol="tcp", address="10.0.0.1", port=80))


def test_dr_real_server_takes_the_virtual_port_as_ipvsadm_forces_it() -> None:
    (op,) = parse_command("-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -g", Table())
    assert op == AddRealServer(op.key, RealServer("10.0.0.2", 80))  # type: ignore[union-attr]
    (op,) = parse_command("-a -t 10.0.0.1:80 -r 10.0.0.2 -m", Table())
    assert op.real_server.port == 80  # type: ignore[union-attr]


def test_set_keeps_a_timeout_given_as_zero() -> None:
    table = Table(timeouts=Timeouts(tcp=900, tcpfin=120, udp=300))
    assert parse_command("--set 0 30 0", table) == [SetTimeouts(Timeouts(900, 30, 300))]


def test_tunnel_options_are_read() -> None:
    (op,) = parse_command("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gre --tun-csum", Table())
    assert op.real_server.tunnel == Tunnel(type="gre", checksum="csum")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        ("-A -t 10.0.0.1:70000 -s rr", "-t", "10.0.0.1:70000"),
        ("-A -t 10.0.0.1:80 -s fastest", "VirtualService.scheduler", "fastest"),
        ("-A -t 10.0.0.1:80 -s rr --bogus", "option", "--bogus"),
        ("-A -t 10.0.0.1:80 -s rr -b sh-port", "VirtualService.flags", "sh-port"),
        ("-A -t 10.0.0.1:80 -s rr -b turbo", "-b", "turbo"),
        ("-a -t 10.0.0.1:80 -r 10.0.0.2:80 -w heavy", "weight", "heavy"),
        ("-t 10.0.0.1:80", "command", "-t 10.0.0.1:80"),
        ("-A -t web.example:80", "-t", "web.example:80"),
        ("-A -f 1 -s rr -p 60 -M 255.255.0.0 -6", "VirtualService.persistence", ipaddress.IPv4Address("255.255.0.0")),
    ],
)
def test_a_malformed_line_raises_a_parse_error_naming_the_option_and_value(
    line: str, field: str, value: object
) -> None:
    with pytest.raises(ParseError) as error:
        parse_command(line, Table(), "rules line 7")
    assert (error.value.owner, error.value.field, error.value.value) == ("rules line 7", field, value)


def test_parse_save_names_the_line_number_of_a_bad_line() -> None:
    with pytest.raises(ParseError) as error:
        parse_save("-A -t 10.0.0.1:80 -s rr\n\n-a -t 10.0.0.1:80 -r 10.0.0.2:99999 -m\n")
    assert error.value.owner == "ipvsadm line 3"
