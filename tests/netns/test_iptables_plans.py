"""Issue 11's plan findings on the iptables backend, in throw-away namespaces: policy routes whose
tables move between marks or swap, under several hash seeds (the steps once followed a set's order)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from _harness.netns import Lab
from lbcore_iptables import IPTablesBackend

from lbcore import Balancer
from lbcore.rules import PolicyRoute
from lbcore.table import Table

pytestmark = pytest.mark.netns

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPERATOR_ROUTE = "198.51.100.0/24 dev lo table 106"  # another tool's route in a table lbcore uses


def _routes(lab: Lab) -> str:
    rules = lab.run("dir", "ip", "rule", "show")
    tables = [lab.run("dir", "ip", "route", "show", "table", str(t)) for t in (106, 107)]
    return rules + "".join(tables)


def test_policy_route_table_swap() -> None:
    # Swapping the tables of two marks failed on every attempt (an intermediate state had two
    # routes in one table); the kernel then refused with EEXIST.
    with Lab("dir") as lab, lab.inside("dir"):
        lab.run("dir", "ip", "route", "add", *OPERATOR_ROUTE.split())
        backend = IPTablesBackend(legacy_beside_nft=True)
        try:
            lb = Balancer(backend)
            lb.apply(Table([], rules=[PolicyRoute(3, 106), PolicyRoute(4, 107)]))
            swapped = Table([], rules=[PolicyRoute(3, 107), PolicyRoute(4, 106)])
            assert len(lb.apply(swapped)) == 4
            assert lb.apply(swapped) == []
            assert backend.read().rules == {r.key: r for r in (PolicyRoute(3, 107), PolicyRoute(4, 106))}
            shown = _routes(lab)
            assert "fwmark 0x3 lookup 107" in shown and "fwmark 0x4 lookup 106" in shown, shown
            assert OPERATOR_ROUTE.split(" table")[0] in lab.run("dir", "ip", "route", "show", "table", "106")
        finally:
            backend.close()


SCRIPT = textwrap.dedent("""
    from lbcore import Balancer, Table
    from lbcore.rules import PolicyRoute
    from lbcore_iptables import IPTablesBackend

    lb = Balancer(IPTablesBackend(legacy_beside_nft=True))
    # Built from sets, as a deployment file's rules may be: their order follows the hash seed.
    lb.apply(Table([], rules={PolicyRoute(3, 106), PolicyRoute(5, 108)}))
    lb.apply(Table([], rules={PolicyRoute(4, 106), PolicyRoute(5, 108)}))  # table 106: mark 3 -> 4
    lb.apply(Table([], rules={PolicyRoute(4, 108), PolicyRoute(5, 106)}))  # and a swap
    assert lb.apply(Table([], rules={PolicyRoute(4, 108), PolicyRoute(5, 106)})) == []
    lb.apply(Table([], rules=[]))
""")


def test_policy_route_table_move_is_hash_order_independent() -> None:
    # Moving a table from mark 3 to mark 4 succeeded or failed with EEXIST by PYTHONHASHSEED.
    with Lab("dir") as lab, lab.inside("dir"):
        for seed in ("0", "1", "2", "3", "4", "5", "6", "7"):
            done = subprocess.run(
                [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
                env={**os.environ, "PYTHONHASHSEED": seed,
                     "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "backends")])})
            assert done.returncode == 0, f"PYTHONHASHSEED={seed}: {done.stderr}"
            assert "fwmark" not in lab.run("dir", "ip", "rule", "show")  # all gone after each run
