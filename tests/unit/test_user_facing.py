"""What a user sees: reprs in their own words, a refusal that says where the feature is, a typed backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lbcore import (
    Balancer,
    FirewallMark,
    Persistence,
    RealServer,
    Redirect,
    Table,
    Timeouts,
    Unsupported,
    VirtualService,
)
from lbcore.health import CheckedService, HTTPCheck, Policy, TCPCheck
from lbcore.sim import SimBackend

ROOT = Path(__file__).resolve().parents[2]

WEB = VirtualService(
    protocol="tcp", address="192.0.2.10", port=80, persistence=Persistence(timeout=300, netmask="255.255.255.0"),
    real_servers=[RealServer("198.51.100.11", 80), RealServer("198.51.100.12", 80, weight=2)],
)


def test_a_table_shows_its_services_and_rules_not_a_mappingproxy() -> None:
    lb = Balancer(SimBackend())
    lb.apply(Table([WEB], rules=[FirewallMark(1, "tcp", ports=(80, 443))]))
    table = lb.read()
    assert repr(table) == (
        "Table(services=[VirtualService(protocol='tcp', address='192.0.2.10', port=80, family=4, "
        "persistence=Persistence(timeout=300, netmask='255.255.255.0'), "
        "real_servers=[RealServer(address='198.51.100.11', port=80), "
        "RealServer(address='198.51.100.12', port=80, weight=2)])], "
        "rules=[FirewallMark(mark=1, protocols=['tcp'], ports=[80, 443])], "
        "timeouts=Timeouts(), sysctls=Sysctls())"
    )
    assert "mappingproxy" not in repr(table)
    assert repr(Table()) == "Table(services=[])"


@pytest.mark.parametrize("value", [
    WEB,
    Table([WEB], rules=[Redirect("192.0.2.10", port=80, to_port=8080)], timeouts=Timeouts(tcp=60)),
    FirewallMark(2, ("tcp", "udp"), except_destinations=["192.0.2.0/24"]),
    VirtualService(fwmark=7, family=6, scheduler="sh", flags=["sh-port"], persistence=Persistence(netmask=64)),
    RealServer("2001:db8::1", 80, forward="tunnel"),
    CheckedService(service=WEB, check=TCPCheck(), checks={"198.51.100.12:80": HTTPCheck(status=[200, 204])},
                   policy=Policy(interval=2, fall=3)),
], ids=type)
def test_a_repr_is_the_code_that_makes_the_value(value: object) -> None:
    from lbcore import Sysctls, Tunnel  # noqa: F401 - names the reprs use

    assert "<" not in repr(value) and "IPv4Address" not in repr(value)
    assert eval(repr(value)) == value


def test_the_6_1_simulator_refuses_twos_saying_that_6_2_has_it() -> None:
    twos = VirtualService(protocol="tcp", address="192.0.2.10", port=80, scheduler="twos")
    with pytest.raises(Unsupported) as error:
        Balancer(SimBackend()).add_service(twos)
    assert error.value.backend == "sim"
    assert 'Linux 6.1 has no twos scheduler (it came in Linux 6.2: SimBackend(kernel="6.2") has it)' in str(error.value)
    lb = Balancer(SimBackend(kernel="6.2"))
    lb.add_service(twos)
    assert list(lb.read()) == [twos]


def test_the_iptables_data_plane_does_not_point_to_a_release_for_what_it_never_has() -> None:
    twos = VirtualService(protocol="tcp", address="192.0.2.10", port=80, scheduler="twos")
    with pytest.raises(Unsupported) as error:
        Balancer(SimBackend(kernel="6.2", dataplane="iptables")).add_service(twos)
    assert "kernel=" not in str(error.value)


TYPED = '''
from lbcore import Balancer, Backend
from lbcore.sim import SimBackend

lb = Balancer(SimBackend())
reveal_type(lb)
reveal_type(lb.backend.connect("203.0.113.5", "192.0.2.10", 80))
reveal_type(Balancer())
reveal_type(Balancer("sim"))
with Balancer(SimBackend()) as inner:
    reveal_type(inner.backend)
def takes(balancer: Balancer) -> Backend:
    return balancer.backend
takes(lb)
'''


def test_a_balancer_is_typed_by_its_backend_under_mypy_strict(tmp_path: Path) -> None:
    source = tmp_path / "typed.py"
    source.write_text(TYPED)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"),
         "--config-file", str(ROOT / "pyproject.toml"), str(source)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )
    revealed = [line.split("Revealed type is ", 1)[1] for line in done.stdout.splitlines() if "Revealed type" in line]
    assert revealed == [
        '"lbcore.balancer.Balancer[lbcore.sim.backend.SimBackend]"',
        '"lbcore.sim.backend.Connection | None"',
        '"lbcore.balancer.Balancer[lbcore.backend.Backend]"',
        '"lbcore.balancer.Balancer[lbcore.backend.Backend]"',
        '"lbcore.sim.backend.SimBackend"',
    ], done.stdout
    assert "error" not in done.stdout, done.stdout
