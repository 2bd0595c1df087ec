"""Every example runs against the simulator and prints what its docstring promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = {e.stem: e for e in sorted((Path(__file__).parent.parent / "examples").glob("*.py"))}


def run(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES[name]), *args], capture_output=True, text=True,
                          check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def section(out: str, title: str) -> str:
    """The output after a report's title."""
    return out.split(f"\n{title}\n", 1)[1]


def test_the_examples_are_the_guides_four_options_dh_and_two_more() -> None:
    assert list(EXAMPLES) == ["01_option_1a", "02_option_1b", "03_option_1c", "04_option_2", "05_option_2_dh",
                              "06_persistence", "07_failover"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_opens_with_a_docstring_and_takes_backend(name: str) -> None:
    text = EXAMPLES[name].read_text()
    assert text.startswith('"""') and "--backend" in text
    assert not re.search(r"issue [0-9]", text)


def test_option_1a_is_the_guides_dr_service_with_both_reports() -> None:
    out = run("01_option_1a")
    status = section(out, "Layer 4 Status")
    assert "TCP  192.168.2.202:8080 wlc persistent 3600" in status
    assert [line.split()[1] for line in status.splitlines() if line.strip().startswith("->")][-3:] == [
        "192.168.2.210:8080", "192.168.2.211:8080", "192.168.2.212:8080"]
    assert "Route" in status and "Conns   InPkts" in status  # DR, and the statistics
    assert "gateway 192.168.2.212: add_rule redirect dst=192.168.2.202 proto=tcp" in out
    current = section(out, "Layer 4 Current Connections")
    assert "IPVS connection entries" in current and "ESTABLISHED" in current and "ASSURED" in current
    assert "0 refused" in out


def test_option_1b_is_nat_with_auto_nat_and_counts_replies() -> None:
    out = run("02_option_1b")
    assert "director: add_rule auto-nat eth0 src=192.168.4.0/24" in out
    status = section(out, "Layer 4 Status")
    assert "Masq" in status and "192.168.4.211:8080" in status
    total = next(line for line in status.splitlines() if line.startswith("TCP  192.168.2.202:8080 "))
    assert int(total.split()[3]) > 0  # OutPkts: a NAT director sees the replies


def test_option_1c_is_nat_without_auto_nat() -> None:
    out = run("03_option_1c")
    assert "TCP  192.168.2.202:8080 wlc persistent 3600" in out and "Masq" in out
    assert "auto-nat" not in out


def test_option_2_marks_routes_checks_and_sends_a_clients_http_and_https_to_one_gateway() -> None:
    out = run("04_option_2")
    assert "director: add_rule mark 1 proto=tcp ports=80,443" in out
    assert "director: add_rule policy-route 1 table=100" in out
    assert "FWM  1 wlc persistent 3600" in out
    assert re.search(r"t=\d+s down 192\.168\.2\.212", out)
    assert re.search(r"192\.168\.2\.212:0 +Route +0 ", out)  # quiesced by the ping check


def test_dh_example_gives_each_site_one_gateway_and_shows_dh_has_no_fallback() -> None:
    out = run("05_option_2_dh")
    assert "FWM  1 dh" in out and "every site has one gateway" in out
    assert re.search(r"gateway 3 quiesced: [1-9]\d* sites refused", out)
    assert "gateway 3 removed: every site served again" in out


def test_persistence_example_shows_the_template_outliving_its_timeout_then_expiring() -> None:
    lines = run("06_persistence").splitlines()
    first, t45, t345 = (lines[0].split()[3], lines[2].split()[3], lines[3].split()[3])
    assert first == t45 != t345


def test_failover_example_moves_only_the_failed_gateways_clients_when_quiesced() -> None:
    lines = run("07_failover").splitlines()
    on_two = int(lines[1].split(":")[1])
    moved_quiesced = int(lines[2].split()[1])
    assert on_two > 0 and moved_quiesced == on_two


@pytest.mark.parametrize("name", ["04_option_2", "05_option_2_dh"])
def test_examples_refuse_a_backend_they_cannot_drive(name: str) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLES[name]), "--backend", "nope"], capture_output=True,
                          text=True, check=False, timeout=120)
    assert done.returncode == 2 and "invalid choice: 'nope'" in done.stderr
