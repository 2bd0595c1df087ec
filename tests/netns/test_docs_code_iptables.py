"""The docs' ```python blocks that drive netfilter run as written, each in a throw-away namespace."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from _harness.netns import Lab

from tests._docs_code import ENV, Block, blocks

pytestmark = pytest.mark.netns

NETNS = blocks("netns")
#: The kinds of rule the iptables backend holds after the block, as it reads them back.
READ_BACK = ("from lbcore import Balancer\n"
             "rules = Balancer('iptables').read().rules or {}\n"
             "print(*sorted({type(r).__name__ for r in rules.values()}), sep='\\n')\n")
RULE = re.compile(r"\b(FirewallMark|PolicyRoute|Redirect|LoopbackVIP|AutoNat)\(")


@pytest.mark.parametrize("block", NETNS, ids=[b.id for b in NETNS])
def test_an_iptables_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    python = ("env", *(f"{k}={ENV[k]}" for k in ("PYTHONPATH", "LBCORE_IPTABLES_LEGACY")), sys.executable)
    with Lab("host") as lab:  # the rules go with the namespace
        lab.run("host", *python, str(block.write(tmp_path)))
        rules = lab.run("host", *python, "-c", READ_BACK)
    assert rules.strip() and rules.strip() == "\n".join(sorted(set(RULE.findall(block.code)))), rules
