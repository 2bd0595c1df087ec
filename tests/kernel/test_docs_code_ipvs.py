"""The docs' ```python blocks that drive IPVS run as written, each in a throw-away namespace of the kernel.

The namespace has what the docs take for granted on a director: ``eth0`` on the real servers'
network (the kernel refuses a real server it cannot route to) and ``eth1`` for the sync daemon.
IPVS is per namespace, so what a block applies goes with it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from _harness.netns import Lab

from tests._docs_code import ENV, Block, blocks

pytestmark = pytest.mark.kernel

KERNEL = blocks("kernel")


@pytest.mark.parametrize("block", KERNEL, ids=[b.id for b in KERNEL])
def test_an_ipvs_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    # A block takes seconds; the bound only turns a hang into a failure that shows where it hangs.
    python = ("env", *(f"{k}={ENV[k]}" for k in ("PYTHONPATH", "LBCORE_IPTABLES_LEGACY")),
              "timeout", "--signal=ABRT", "300", sys.executable, "-X", "faulthandler")
    with Lab("director") as lab:
        for link, address in (("eth0", "198.51.100.1/24"), ("eth1", "10.0.0.1/24")):
            lab.run("director", "ip", "link", "add", link, "type", "dummy")
            lab.run("director", "ip", "addr", "add", address, "dev", link)
            lab.run("director", "ip", "link", "set", link, "up")
        lab.run("director", *python, str(block.write(tmp_path)))
        saved = lab.run("director", "ipvsadm-save", "-n")
    services = [f" {a}:{p} " for a, p in re.findall(r'address="([\d.]+)", port=(\d+)', block.code)]
    services += [f"-f {m} " for m in re.findall(r"fwmark=(\d+)", block.code)]
    assert services and all(s in saved for s in services), saved
