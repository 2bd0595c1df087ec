"""The kernel plugin's own logic, without a kernel: the plan, claims and budgets of the boots.

The inner half runs as it does inside user-mode Linux (``LBCORE_IN_UML=1`` and a run directory
from the host), in pytest subprocesses on this machine: nothing in it needs the kernel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _harness.kernel_plugin import split

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent


def test_units_go_longest_first_a_test_with_its_own_budget_alone_and_modules_whole() -> None:
    tests = [("tests/kernel/test_a.py::x", 60.0, False), ("tests/kernel/test_a.py::y", 60.0, False)]
    tests += [(f"tests/kernel/test_differential.py::t[{n}]", 110.0, True) for n in range(3)]
    tests += [("tests/kernel/test_b.py::z", 10.0, True), ("tests/kernel/test_c.py::w", 60.0, False)]

    units = split(tests)

    assert units == [["tests/kernel/test_a.py::x", "tests/kernel/test_a.py::y"],  # 120 s
                     ["tests/kernel/test_differential.py::t[0]"], ["tests/kernel/test_differential.py::t[1]"],
                     ["tests/kernel/test_differential.py::t[2]"],
                     ["tests/kernel/test_c.py::w"], ["tests/kernel/test_b.py::z"]]


def test_a_test_past_its_budget_fails_alone_with_its_reason_and_the_others_keep_their_results(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytester.makeconftest("from _harness.kernel_plugin import pytest_configure, pytest_runtest_protocol\n")
    pytester.makepyfile(test_budgets="""
        import time
        import pytest

        pytestmark = pytest.mark.kernel

        @pytest.fixture
        def torn_down():
            yield
            print("teardown ran")

        def test_slow(torn_down):
            time.sleep(60)

        def test_quick():
            pass

        def test_not_given_to_this_boot():
            pass
    """)
    plan = {"units": [["test_budgets.py::test_slow"], ["test_budgets.py::test_quick"]],
            "budgets": {"test_budgets.py::test_slow": 1.0, "test_budgets.py::test_quick": 30.0}}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "claims").mkdir()
    run = tmp_path / "boot-1"
    run.mkdir()
    monkeypatch.setenv("LBCORE_IN_UML", "1")
    monkeypatch.setenv("LBCORE_KERNEL_RUN", str(run))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(str(ROOT / p) for p in (".", "backends", "tests")))

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", timeout=50)

    result.assert_outcomes(passed=1, failed=1, deselected=1)
    result.stdout.fnmatch_lines(["*teardown ran*", "*time.sleep(60)*",
                                 "*test_budgets.py::test_slow took longer than its budget of 1 s*"])
    lines = [json.loads(line) for line in (run / "reports.jsonl").read_text().splitlines()]
    assert [line["$start"] for line in lines if "$start" in line] == ["test_budgets.py::test_slow",
                                                                      "test_budgets.py::test_quick"]
    reports = [line for line in lines if "$start" not in line]
    assert [(r["nodeid"].split("::")[1], r["when"], r["outcome"]) for r in reports] == [
        ("test_slow", "setup", "passed"), ("test_slow", "call", "failed"), ("test_slow", "teardown", "passed"),
        ("test_quick", "setup", "passed"), ("test_quick", "call", "passed"), ("test_quick", "teardown", "passed")]


def test_two_boots_share_the_units_each_test_runs_once_and_every_report_comes_back(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytester.makeconftest("from _harness.kernel_plugin import pytest_configure, pytest_runtest_protocol\n")
    pytester.makepyfile(test_shared="""
        import time
        import pytest

        pytestmark = pytest.mark.kernel

        @pytest.mark.parametrize("n", range(6))
        def test_one(n):
            time.sleep(0.3)
    """)
    nodeids = [f"test_shared.py::test_one[{n}]" for n in range(6)]
    (tmp_path / "plan.json").write_text(json.dumps({"units": [[n] for n in nodeids],
                                                    "budgets": dict.fromkeys(nodeids, 30.0)}))
    (tmp_path / "claims").mkdir()
    monkeypatch.setenv("LBCORE_IN_UML", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(str(ROOT / p) for p in (".", "backends", "tests")))
    boots = []
    for name in ("boot-1", "boot-2"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv("LBCORE_KERNEL_RUN", str(tmp_path / name))
        boots.append(subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
                                      cwd=pytester.path, stdout=subprocess.DEVNULL))
    assert [boot.wait(timeout=60) for boot in boots] == [0, 0]

    ran = {}
    for name in ("boot-1", "boot-2"):
        for line in (tmp_path / name / "reports.jsonl").read_text().splitlines():
            report = json.loads(line)
            if report.get("when") == "call":
                assert report["outcome"] == "passed"
                ran.setdefault(report["nodeid"], []).append(name)
    assert sorted(ran) == sorted(nodeids)
    assert all(len(where) == 1 for where in ran.values())  # each once
    assert {where[0] for where in ran.values()} == {"boot-1", "boot-2"}  # side by side, both worked
