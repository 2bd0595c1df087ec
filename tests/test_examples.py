"""Every example runs against the simulator and prints what its docstring promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


def run(example: Path) -> str:
    done = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_there_are_four_numbered_examples() -> None:
    assert [e.name[:3] for e in EXAMPLES] == ["01_", "02_", "03_", "04_"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_example_opens_with_a_docstring_and_takes_backend(example: Path) -> None:
    text = example.read_text()
    assert text.startswith('"""') and "--backend" in text


def test_first_service_prints_both_reports_of_the_guide() -> None:
    out = run(EXAMPLES[0])
    assert "TCP  192.0.2.10:80 wlc persistent 300" in out
    assert "IPVS connection entries" in out and "ESTABLISHED" in out and "ASSURED" in out


def test_persistence_example_shows_the_template_outliving_its_timeout_then_expiring() -> None:
    lines = run(EXAMPLES[1]).splitlines()
    first, t45, t345 = (lines[0].split()[3], lines[2].split()[3], lines[3].split()[3])
    assert first == t45 != t345


def test_fwmark_example_sends_http_and_https_of_a_client_to_one_proxy() -> None:
    out = run(EXAMPLES[2])
    assert "FWM  1 sh (sh-fallback) persistent 600" in out


def test_failover_example_moves_only_the_failed_gateways_clients_when_quiesced() -> None:
    lines = run(EXAMPLES[3]).splitlines()
    on_two = int(lines[1].split(":")[1])
    moved_quiesced = int(lines[2].split()[1])
    assert on_two > 0 and moved_quiesced == on_two
