"""The lbcore command on a real kernel: each of the guide's deployment files applied with
``lbcore apply FILE --backend ipvs --yes``, then the kernel's ``ipvsadm -Sn`` is exactly
``lbcore export FILE --to ipvsadm-save``.

Each file is applied in a throw-away network namespace of the user-mode Linux kernel (IPVS,
netfilter and policy routing are per namespace), so its VIP and marks cannot meet another kernel
test's. A file with rules (Auto-NAT, firewall marks, policy routes) goes to ``ipvs+iptables``:
the services to IPVS, the rules to netfilter and rtnetlink, as one change. The command runs as a
user runs it: the installed ``lbcore`` script, in a subprocess, inside the namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _harness.netns import Lab

from lbcore.formats.yaml import load

pytestmark = pytest.mark.kernel(budget=240)

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("option-*.yaml"))


@pytest.fixture
def director() -> Iterator[Lab]:
    """A namespace "dir" with routes to the examples' real servers (the kernel refuses a real server
    it cannot route): 192.168.2.0/24 (DR) and 192.168.4.0/24 (NAT)."""
    with Lab("dir") as lab:
        dev = lab.dummy("dir", "192.168.2.1/24")
        lab.batch("dir", [f"addr add 192.168.4.1/24 dev {dev}"])
        yield lab


def lbcore(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed lbcore in the director's namespace; this checkout's code first on the path."""
    exe = shutil.which("lbcore")
    if exe is None:
        pytest.fail("the lbcore console script is not on PATH: pip install -e .", pytrace=False)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "backends")]),
               LBCORE_IPTABLES_LEGACY="1")  # the iptables backend writes legacy rules, as the netns tests do
    done = subprocess.run(["ip", "netns", "exec", lab.ns("dir"), exe, *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_apply_on_the_kernel_then_ipvsadm_save_is_the_export(director: Lab, example: Path) -> None:
    backend = "ipvs+iptables" if load(example.read_text(), str(example)).rules else "ipvs"
    plan = lbcore(director, "plan", str(example), "--backend", backend)
    assert plan.returncode == 1, plan.stderr
    applied = lbcore(director, "apply", str(example), "--backend", backend, "--yes")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout == plan.stdout
    export = lbcore(director, "export", str(example), "--to", "ipvsadm-save")
    assert export.returncode == 0, export.stderr
    assert director.run("dir", "ipvsadm", "-Sn") == export.stdout
    # Converged: nothing left to plan, and "Layer 4 Status" is the kernel's own ipvsadm -Ln.
    again = lbcore(director, "plan", str(example), "--backend", backend)
    assert (again.returncode, again.stdout) == (0, ""), again.stderr
    status = lbcore(director, "status", str(example), "--backend", "ipvs")
    assert status.returncode == 0, status.stderr
    assert status.stdout == director.run("dir", "ipvsadm", "-Ln")
