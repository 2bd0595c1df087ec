"""The README's main job, the lbcore commands of its first line, run as the README runs them."""

from __future__ import annotations

import shlex

from conftest import ROOT, Run


def readme_lbcore_commands() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text()
    first = next(line for line in readme.split("```sh\n", 1)[1].splitlines() if line and not line.startswith("#"))
    steps = [shlex.split(step) for step in first.split("&&")]
    return [step[1:] for step in steps if step[0] == ".venv/bin/lbcore"]


def test_the_readmes_main_job_applies_option_1a_and_prints_its_layer_4_status(lbcore: Run) -> None:
    commands = readme_lbcore_commands()
    assert [c[0] for c in commands] == ["apply", "status"]
    outputs = []
    for args in commands:
        done = lbcore(*args, cwd=ROOT)
        assert done.returncode == 0, (args, done.stderr)
        outputs.append(done.stdout)
    applied, status = outputs
    assert applied.splitlines()[0] == "-A -t 192.168.2.202:8080 -s wlc -p 3600"
    assert "TCP  192.168.2.202:8080 wlc persistent 3600" in status.splitlines()
    assert sum(line.startswith("  -> 192.168.2.21") for line in status.splitlines()) == 3
