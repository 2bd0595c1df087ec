"""``lbcore simulate`` as a user runs it: the installed ``lbcore`` script, in a subprocess."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lbcore import Deployment
from lbcore.formats.ipvsadm import parse_save
from lbcore.whatif import Failure, Scenario, simulate

ROOT = Path(__file__).resolve().parent.parent.parent

#: The guide's Option 1A (wlc, persistence 3600 s) beside Option 2's fwmark service, as ipvsadm-save prints them.
SAVE = """\
-A -t 192.168.2.202:8080 -s wlc -p 3600
-a -t 192.168.2.202:8080 -r 192.168.2.210:8080 -g -w 1
-a -t 192.168.2.202:8080 -r 192.168.2.211:8080 -g -w 1
-a -t 192.168.2.202:8080 -r 192.168.2.212:8080 -g -w 1
-A -f 1 -s wlc -p 3600
-a -f 1 -r 192.168.2.210:0 -g -w 1
-a -f 1 -r 192.168.2.211:0 -g -w 1
-a -f 1 -r 192.168.2.212:0 -g -w 1
"""


def env(*first: Path) -> dict[str, str]:
    """This checkout first on PYTHONPATH (after ``first``), so the installed script runs this tree's code."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([*map(str, first), str(ROOT), str(ROOT / "backends")])
    return e


def lbcore(*args: str, cwd: Path, extra_path: tuple[Path, ...] = ()) -> subprocess.CompletedProcess[str]:
    script = shutil.which("lbcore")
    if script is None:
        pytest.fail("the lbcore console script is not on PATH: pip install -e .", pytrace=False)
    done = subprocess.run([script, *args], capture_output=True, text=True, cwd=cwd, env=env(*extra_path),
                          timeout=300, check=False)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    path = tmp_path / "director.save"
    path.write_text(SAVE)
    return path


def test_simulate_prints_each_real_servers_load_and_each_failure_the_same_for_a_seed(
        deployment: Path, tmp_path: Path) -> None:
    args = ("simulate", str(deployment), "--clients", "50", "--rate", "20", "--duration", "1m",
            "--fail", "192.168.2.211@30s", "--seed", "7")
    first, again = lbcore(*args, cwd=tmp_path), lbcore(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout
    lines = first.stdout.splitlines()
    assert re.match(r"\d+ sessions from 50 clients over 60 s \(rate 20/s, mean session 30 s, seed 7\): "
                    r"\d+ opened, 0 refused, \d+ persistence hits$", lines[0]), lines[0]
    assert "-t 192.168.2.202:8080" in lines and "-f 1" in lines
    assert any(line.split()[:1] == ["192.168.2.211:8080"] and line.endswith("%") for line in lines)
    assert any(line.startswith("  192.168.2.211 fails at 30 s: out of service at 30 s;") for line in lines)
    assert lbcore(*args[:-1], "8", cwd=tmp_path).stdout != first.stdout


def test_the_json_output_is_the_librarys_result(deployment: Path, tmp_path: Path) -> None:
    done = lbcore("simulate", str(deployment), "--output", "json", "--clients", "30", "--rate", "10",
                  "--duration", "40s", "--session", "10s", "--fail", "192.168.2.210@10s", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    expected = simulate(Deployment.from_table(parse_save(SAVE)), Scenario(
        clients=30, rate=10, duration=40, mean_session=10, failures=[Failure(address="192.168.2.210", at=10.0)]))
    assert printed == json.loads(json.dumps(expected.to_json()))
    assert printed["failures"][0]["moved"] > 0 and printed["refused"] == 0


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--fail", "192.168.2.211", "--fail.value: '192.168.2.211' is not ADDRESS@TIME"),
    ("--fail", "192.168.2.211@soon", "--fail.time: 'soon' is not a time"),
    ("--fail", "192.0.2.99@3s", "'192.0.2.99@3s' is not a real server of the deployment"),
    ("--recover", "192.168.2.211@3s", "follows no failure of that address"),
    ("--duration", "a while", "--duration.time: 'a while' is not a time"),
    ("--service", "-t 192.0.2.1:80", "is not a service of the deployment"),
])
def test_bad_input_is_one_line_exit_2(deployment: Path, tmp_path: Path, option: str, value: str,
                                      message: str) -> None:
    done = lbcore("simulate", str(deployment), f"{option}={value}", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("lbcore: InvalidField: ") and message in done.stderr
    assert done.stderr.count("\n") == 1 and done.stdout == ""


def test_a_missing_file_is_exit_2(tmp_path: Path) -> None:
    done = lbcore("simulate", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert done.returncode == 2 and "nope.yaml: No such file or directory" in done.stderr


def test_plot_writes_a_png(deployment: Path, tmp_path: Path) -> None:
    png = tmp_path / "load.png"
    done = lbcore("simulate", str(deployment), "--rate", "20", "--fail", "192.168.2.211@20s",
                  "--recover", "192.168.2.211@45s", "--plot", str(png), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 0
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk: a real image, not an empty one
    assert width >= 600 and height >= 400
    if os.environ.get("LBCORE_KEEP_PLOT"):  # to look at it: LBCORE_KEEP_PLOT=/tmp/load.png
        shutil.copy(png, os.environ["LBCORE_KEEP_PLOT"])


def test_plot_without_matplotlib_names_the_extra(deployment: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "no-matplotlib"
    (blocker / "matplotlib").mkdir(parents=True)
    (blocker / "matplotlib" / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    done = lbcore("simulate", str(deployment), "--plot", str(tmp_path / "x.png"), cwd=tmp_path,
                  extra_path=(blocker,))
    assert done.returncode == 2
    assert done.stderr == "lbcore: --plot needs matplotlib: pip install 'lbcore[plot]'\n"
    assert not (tmp_path / "x.png").exists()


def test_python_m_lbcore_simulate_runs_too(deployment: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "lbcore", "simulate", str(deployment), "--duration", "10s"],
                          capture_output=True, text=True, cwd=tmp_path, env=env(), timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "192.168.2.210:8080" in done.stdout


def test_a_long_run_on_a_terminal_shows_a_progress_bar_on_stderr(deployment: Path, tmp_path: Path) -> None:
    script = shutil.which("lbcore")
    assert script is not None
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [script, "simulate", str(deployment), "--rate", "500", "--duration", "50s", "--session", "5s",
             "--output", "json"], stdout=subprocess.PIPE, stderr=follower, cwd=tmp_path,
            env={**env(), "TERM": "xterm", "COLUMNS": "100"})
        os.close(follower)
        seen = b""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closed: the command ended
                    break
                if not chunk:
                    break
                seen += chunk
            elif process.poll() is not None:
                break
        out, _ = process.communicate(timeout=300)
    finally:
        os.close(leader)
    assert process.returncode == 0
    assert b"simulating" in seen and b"Traceback" not in seen
    assert json.loads(out)["sessions"] > 20_000


def test_the_docs_example_prints_what_the_docs_show(tmp_path: Path) -> None:
    page = (ROOT / "docs" / "how-to" / "whatif.md").read_text()
    section = page.split("(simulate-command)=", 1)[1]
    command = section.split("```sh\n", 1)[1].split("\n```", 1)[0]
    shown = section.split("```text\n", 1)[1].split("\n```", 1)[0]
    words = command.split()
    assert words[:2] == ["lbcore", "simulate"]
    done = lbcore(*words[1:], cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip("\n") == shown


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("option-*.yaml")))
def test_every_example_deployment_simulates_with_a_failure(example: str, tmp_path: Path) -> None:
    from lbcore.formats.yaml import load

    path = ROOT / "examples" / example
    deployment = load(path.read_text(), str(path))
    first = deployment.virtual_services()[0].real_servers[0].address
    done = lbcore("simulate", str(path), "--output", "json", "--rate", "20", "--duration", "40s",
                  "--fail", f"{first}@10s", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["sessions"] == result["opened"] + result["refused"] > 0
    assert sum(r["sessions"] for r in result["real_servers"]) == result["opened"]
    assert {r["service"] for r in result["real_servers"]} == {str(s.key) for s in deployment.virtual_services()}
    (failure,) = result["failures"]
    assert failure["address"] == str(first) and failure["detected"] is not None and failure["detected"] >= 10


def test_the_table_output_shows_the_same_numbers(deployment: Path, tmp_path: Path) -> None:
    args = ("simulate", str(deployment), "--duration", "20s", "--fail", "192.168.2.211@5s")
    text = lbcore(*args, cwd=tmp_path).stdout
    table = lbcore(*args, "--output", "table", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0] == text.splitlines()[0]
    for line in text.splitlines():
        if line.startswith("  192.168.2.21") and line.endswith("%"):
            endpoint, sessions, share = line.split()
            assert re.search(rf"{re.escape(endpoint)}\s+\S\s+{sessions}\s+\S\s+{re.escape(share)}", table.stdout)
    assert "Failures" in table.stdout and "Events" in table.stdout
