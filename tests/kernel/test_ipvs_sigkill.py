"""SIGKILL mid-apply on the ipvs backend: at every netlink send, and at random instants.

A child process (tests/kernel/_ipvs_apply.py) applies a representative deployment; it is killed
with SIGKILL right after its k-th netlink send (``LBCORE_IPVS_KILL_AT_SEND``, a private hook of
lbcore_ipvs._netlink), for every k of the apply, and at random instants. After each kill, a fresh
backend (this test's process, and once a fresh child) converges in one apply (a second one plans
nothing), and another tool's IPVS services, outside lbcore's VIPs, are exactly as they were.

Why this holds: IPVS carries out each netlink request whole, inside sendmsg(), and every service
and real server lbcore makes is one request; so a kill leaves a prefix of the plan's requests in
effect, and every such state is one that read() takes in full (ownership is by VIP and mark,
declared when the backend opens, so nothing on disk can be left half-written).

``LBCORE_SIGKILL_RANDOM`` sets the random kills (20 by default, 100 for the long run);
``LBCORE_SIGKILL_REPORT`` names a file that gets the counts as JSON.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _ipvs_apply import GOAL, NET, START, open_backend

from lbcore import Balancer, Table

RANDOM_KILLS = int(os.environ.get("LBCORE_SIGKILL_RANDOM", "20"))
CHILD = [sys.executable, str(Path(__file__).with_name("_ipvs_apply.py"))]
ROOT = Path(__file__).resolve().parents[2]
#: Another tool's services: on VIPs and a mark lbcore was not given.
FOREIGN = [
    "-A -t 10.0.4.1:80 -s rr",
    f"-a -t 10.0.4.1:80 -r {NET}.50:80 -m -w 3",
    "-A -u 10.0.4.2:53 -s sh",
    f"-a -u 10.0.4.2:53 -r {NET}.51:53 -m -w 1",
    "-A -f 97 -s wlc -p 60",
]

pytestmark = pytest.mark.kernel(budget=300 + 12 * RANDOM_KILLS)  # about 2 s a kill on a quiet machine


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


def foreign_lines() -> list[str]:
    return [line for line in sh("ipvsadm", "-Sn").splitlines() if "10.0.4." in line or "-f 97 " in line]


@pytest.fixture
def kernel() -> Iterator[None]:
    """A route to the real servers, another tool's services; everything removed afterwards."""
    sh("ip", "link", "add", "lbkill0", "type", "dummy")
    try:
        sh("ip", "link", "set", "lbkill0", "up")
        sh("ip", "addr", "add", f"{NET}.254/24", "dev", "lbkill0")
        sh("ipvsadm", "-C")
        for line in FOREIGN:
            sh("ipvsadm", *line.split())
        yield
    finally:
        try:
            Balancer(open_backend()).apply(Table([], timeouts=GOAL.timeouts))  # global timeouts as they were
        finally:
            subprocess.run(["ipvsadm", "-C"], check=False)
            subprocess.run(["ip", "link", "del", "lbkill0"], check=False)


def child(target: str, kill_at: int | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["LBCORE_IPVS_KILL_AT_SEND"] = str(kill_at if kill_at is not None else 10**9)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "backends")])  # this tree's code, as pytest's
    return subprocess.Popen([*CHILD, target], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def measure() -> dict[str, Any]:
    """An apply of GOAL from START, not killed: its netlink sends and how long it took."""
    Balancer(open_backend()).apply(START)
    code, out, err = finish(child("goal"))
    assert code == 0, err
    ready, result = out.splitlines()
    measured: dict[str, Any] = json.loads(result)
    measured["ready"] = int(ready.split()[1])
    assert measured["ops"] >= 12, measured  # every kind of op, so every kind of prefix
    return measured


def converges(foreign: list[str], what: str) -> int:
    """A fresh backend reads what the killed process left and converges in one apply."""
    lb = Balancer(open_backend())
    ops = lb.apply(GOAL)
    assert lb.apply(GOAL) == [], f"{what}: a second apply still had work"
    held = {s.key: (s.settings, set(s.real_servers)) for s in open_backend().read()}
    assert held == {s.key: (s.settings, set(s.real_servers)) for s in GOAL}, what
    assert foreign_lines() == foreign, f"{what}: another tool's services changed"
    return len(ops)


def report(**counts: object) -> None:
    path = os.environ.get("LBCORE_SIGKILL_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps(counts) + "\n")


def test_a_process_killed_at_every_netlink_send_leaves_a_state_one_apply_converges_from(kernel: None) -> None:
    foreign = foreign_lines()
    measured = measure()
    points = range(measured["ready"] + 1, measured["sends"] + 1)  # every send of the apply
    left = []
    for k in points:
        Balancer(open_backend()).apply(START)
        code, _, err = finish(child("goal", kill_at=k))
        assert code == -signal.SIGKILL, f"kill at send {k}: the child ended with {code}: {err}"
        left.append(converges(foreign, f"killed at send {k}"))
    assert len(points) >= measured["ops"]
    assert any(0 < n < measured["ops"] for n in left), left  # some kills left a partial apply
    # Once more with a fresh process as the one that converges.
    Balancer(open_backend()).apply(START)
    assert finish(child("goal", kill_at=points[len(points) // 2]))[0] == -signal.SIGKILL
    code, out, err = finish(child("goal"))
    assert code == 0, err
    assert 0 < json.loads(out.splitlines()[1])["ops"] < measured["ops"]
    assert Balancer(open_backend()).plan(GOAL) == []
    report(test="every send", kill_points=len(points), ops=measured["ops"], sends=measured["sends"],
           partial=sum(0 < n < measured["ops"] for n in left), left_ops=left)


def test_a_process_killed_at_random_instants_leaves_a_state_one_apply_converges_from(kernel: None) -> None:
    foreign = foreign_lines()
    measured = measure()
    rng = random.Random(11)
    killed = finished = partial = 0
    left = []
    for i in range(RANDOM_KILLS):
        Balancer(open_backend()).apply(START)
        proc = child("goal")
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("ready")  # the backend is open: the apply starts now
        time.sleep(rng.uniform(0, 3 * measured["seconds"]))
        proc.send_signal(signal.SIGKILL)
        code, _, err = finish(proc)
        assert code in (0, -signal.SIGKILL), err
        killed += code == -signal.SIGKILL
        finished += code == 0
        n = converges(foreign, f"random kill {i}")
        partial += 0 < n < measured["ops"]
        left.append(n)
    report(test="random", kills=RANDOM_KILLS, killed_mid_apply=killed, finished_first=finished,
           partial=partial, apply_seconds=measured["seconds"], left_ops=left)
    assert killed + finished == RANDOM_KILLS
