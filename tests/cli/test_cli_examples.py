"""The guide's deployments (examples/option-*.yaml) through the command: validated, planned, applied to
the simulator, shown, exported and imported back, as a user runs lbcore on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, Run

EXAMPLES = sorted((ROOT / "examples").glob("option-*.yaml"))


def test_the_guides_four_options_are_shipped() -> None:
    assert [p.name for p in EXAMPLES] == ["option-1a.yaml", "option-1b.yaml", "option-1c.yaml", "option-2.yaml"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_validates_plans_applies_shows_and_exports(lbcore: Run, example: Path) -> None:
    validate = lbcore("validate", str(example))
    assert validate.returncode == 0, validate.stdout + validate.stderr
    plan = lbcore("plan", str(example))
    assert plan.returncode == 1, plan.stderr
    apply = lbcore("apply", str(example), "--yes")
    assert apply.returncode == 0, apply.stderr
    assert apply.stdout == plan.stdout  # the plan shown is the plan applied
    status = lbcore("status", str(example), "-o", "json")
    assert status.returncode == 0, status.stderr
    services = json.loads(status.stdout)["services"]
    export = lbcore("export", str(example), "--to", "ipvsadm-save")
    assert export.returncode == 0, export.stderr
    # Two writers of ipvsadm's words agree: the plan's commands and the export's dump.
    assert export.stdout.splitlines() == [line for line in plan.stdout.splitlines() if line[:2] in ("-A", "-a")]
    assert len(services) == sum(line.startswith("-A ") for line in export.stdout.splitlines())


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_exported_to_yaml_reads_back_the_same(lbcore: Run, example: Path, tmp_path: Path) -> None:
    yaml = lbcore("export", str(example), "--to", "yaml")
    assert yaml.returncode == 0, yaml.stderr
    again = tmp_path / "again.yaml"
    again.write_text(yaml.stdout)
    assert lbcore("export", str(again), "--to", "yaml").stdout == yaml.stdout


def test_import_writes_the_deployment_file_of_a_dump(lbcore: Run, option_1a: Path, tmp_path: Path) -> None:
    done = lbcore("import", str(option_1a))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("services:\n")
    imported = tmp_path / "imported.yaml"
    imported.write_text(done.stdout)
    export = lbcore("export", str(imported), "--to", "ipvsadm-save")
    assert export.stdout == option_1a.read_text()


def test_import_from_standard_input_named_with_from(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("import", "-", "--from", "ipvsadm-save", input=option_1a.read_text())
    assert done.returncode == 0, done.stderr
    assert "192.168.2.202" in done.stdout


def test_every_problem_of_a_deployment_file_with_line_and_column(lbcore: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n"
                   "  - protocol: tcp\n"
                   "    address: 192.0.2.10\n"
                   "    port: 70000\n"
                   "    real_servers:\n"
                   "      - {address: 198.51.100.1, port: 80, weight: -1}\n")
    done = lbcore("validate", str(bad))
    assert done.returncode == 2
    assert done.stdout.splitlines() == [
        f"{bad}:4:11: services[0].port: 70000 is not a port (0..65535)",
        f"{bad}:6:51: services[0].real_servers[0].weight: -1 is not a weight (0..2147483647)",
    ]
    report = json.loads(lbcore("validate", str(bad), "-o", "json").stdout)
    assert report["problems"][0] == {"file": str(bad), "line": 4, "column": 11, "path": "services[0].port",
                                     "message": "70000 is not a port (0..65535)"}
    plan = lbcore("plan", str(bad))
    assert plan.returncode == 2 and plan.stdout == ""
    assert plan.stderr.splitlines() == [f"lbcore: {line}" for line in done.stdout.splitlines()]


def test_validate_names_the_parts_no_backend_carries_yet(lbcore: Run, tmp_path: Path) -> None:
    file = tmp_path / "fip.yaml"
    file.write_text("services:\n  - {protocol: tcp, address: 192.0.2.10, port: 80}\n"
                    "floating_ips:\n  - {address: 192.0.2.10/24, interface: eth0}\n")
    done = lbcore("validate", str(file))
    assert done.returncode == 2
    assert done.stdout == (f"{file}: floating_ips: backend 'sim' does not support Deployment.floating_ips: "
                           "floating IPs are not carried out by any backend yet\n")
