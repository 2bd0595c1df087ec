"""Run the ``kernel`` tests in user-mode Linux boots side by side, and report them as the host's own.

Tests marked ``@pytest.mark.kernel`` need IPVS, which this machine's kernel lacks. pytest collects
them on the host like any test. When the first is due, this plugin splits them into groups and
boots one user-mode Linux per group, the boots side by side (:func:`_harness.uml.run_in_uml`;
the kernel has one CPU, so a boot per core), each running pytest inside on its group's files::

    python -m pytest -p no:cacheprovider --continue-on-collection-errors \\
        --rootdir <rootdir> [-c <inifile>] <file> ...

with ``LBCORE_IN_UML=1`` and ``LBCORE_KERNEL_RUN=<directory>``, a host directory (the kernel's
root is the host's file system) that holds the node ids the host gave this boot and their budgets.
Inside, the same plugin sees ``LBCORE_IN_UML``, deselects the others, lets pytest run the rest as
usual (fixtures included), and appends each test report (setup, call, teardown) to
``reports.jsonl`` in that directory, serialized by pytest's own ``pytest_report_to_serializable``
hook, as pytest-xdist does for its workers. On the host, each kernel test waits for its reports
and replays them through ``pytest_runtest_logreport``, so the terminal, ``-x``, ``--junitxml`` and
the summary see the inner outcome (passed; failed with the inner traceback; skipped; xfailed) as
the test's own. No host fixture runs for a kernel test.

**Time follows the work.** Every kernel test has a budget in seconds:
``@pytest.mark.kernel(budget=S)``, or :data:`DEFAULT_BUDGET`. Inside, a test still running when
its budget is spent fails there and then (an alarm interrupts it, wherever it waits), with a
message that says so; its fixtures are torn down and the next test runs. A boot's own limit is
:data:`BOOT_ALLOWANCE` plus the budgets of its tests: only a kernel that stops making progress
altogether reaches it, and then its tests without a report fail as not run. Tests with a budget of
their own are spread over the boots one by one (longest first, each to the least loaded boot); the
others go module by module, so that a boot imports only what it runs.

**The kernel console** (IPVS warns on every packet it drops) goes to ``console.log`` in each
boot's directory under ``LBCORE_KERNEL_LOGS``, with the inner output (``output``) and PID 1's log
(``init.log``). A failure that the kernel may explain names those files; the directory is removed
after a run in which every kernel test passed.

Why not the inner ``--junitxml``: JUnit XML turns node ids into class and test names (lossy for
parametrized ids), keeps a failure only as text, and has no xfail; report serialization keeps all.
Why files and not node ids on the inner command line: pytest stops the whole run when one given
node id cannot be collected; with files, one broken module fails only its own tests.

Failure, never skip: when user-mode Linux is not installed, does not boot, or stops before a test
reported (its module does not import inside, the run crashed, the boot's limit passed), that
kernel test fails, and its message gives the reason and where to read more.

Use it from the ``conftest.py`` of a directory of kernel tests by importing the hooks::

    from _harness.kernel_plugin import (  # noqa: F401 - pytest hooks
        pytest_configure,
        pytest_runtest_protocol,
        pytest_sessionfinish,
        pytest_terminal_summary,
    )

(``pytest_plugins = [...]`` would be shorter, but pytest refuses it in a conftest below the
rootdir, which is where kernel tests live.)

Environment (host): ``LBCORE_UML_BOOTS`` (boots side by side; default: the number of CPUs),
``LBCORE_KERNEL_BUDGET_SCALE`` (multiplies every budget, for a slow machine; default 1),
``LBCORE_KERNEL_LOGS`` (where the boots' directories go; default a new temporary directory),
``LBCORE_UML_MEM`` (each kernel's memory; default 512M).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import attrs
import pytest

from _harness.uml import IN_UML_ENV, UMLResult, run_in_uml
from lbcore.errors import LBError

__all__ = [
    "BOOT_ALLOWANCE",
    "DEFAULT_BUDGET",
    "RUN_ENV",
    "pytest_configure",
    "pytest_runtest_protocol",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
]

#: The host directory shared with one boot's inner run: ``nodeids.json`` in, ``reports.jsonl`` out.
RUN_ENV = "LBCORE_KERNEL_RUN"
#: Seconds a kernel test may take when its marker names no budget.
DEFAULT_BUDGET = 60.0
#: Seconds a boot may take beyond its tests' budgets: the kernel's boot, pytest's start and
#: collection inside it, and power-off.
BOOT_ALLOWANCE = 120.0
#: Seconds a test that overran its budget has for its teardown.
TEARDOWN_GRACE = 30.0
_MARKER = "kernel"
_MARKER_LINE = (f"{_MARKER}(budget=seconds): runs inside a user-mode Linux kernel with IPVS, within its budget "
                "(tests/_harness/kernel_plugin.py)")
_INNER_NAME = "lbcore-kernel-inner"
_NODEIDS, _REPORTS = "nodeids.json", "reports.jsonl"


@attrs.define
class _Boot:
    """One user-mode Linux boot: its tests, their reports as they come, and how it ended."""

    number: int
    nodeids: list[str]
    budgets: dict[str, float]
    work: Path
    limit: float
    reports: dict[str, list[dict[str, Any]]] = attrs.Factory(dict)
    result: UMLResult | None = None
    error: str | None = None
    seconds: float = 0.0
    done: threading.Event = attrs.Factory(threading.Event)
    _offset: int = 0

    def run(self, config: pytest.Config, cancel: threading.Event) -> None:
        """Boot, run this boot's tests inside, and note how it went (in a thread of its own)."""
        files = list(dict.fromkeys(nodeid.split("::")[0] for nodeid in self.nodeids))
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--continue-on-collection-errors"]
        argv += ["--rootdir", str(config.rootpath)]
        if config.inipath is not None:
            argv += ["-c", str(config.inipath)]
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / _NODEIDS).write_text(json.dumps(self.budgets), encoding="utf-8")
        started = time.monotonic()
        try:
            self.result = run_in_uml(
                [*argv, *files],
                cwd=str(config.rootpath),
                env={**os.environ, RUN_ENV: str(self.work)},
                timeout=self.limit,
                mem=os.environ.get("LBCORE_UML_MEM", "512M"),
                workdir=str(self.work),
                cancel=cancel,
            )
        except (LBError, OSError) as exc:
            self.error = str(exc)
        finally:
            self.seconds = time.monotonic() - started
            self.done.set()

    def poll(self) -> None:
        """Take the reports the inner run has written since the last call."""
        try:
            with open(self.work / _REPORTS, "rb") as file:
                file.seek(self._offset)
                chunk = file.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits for the next call
        self._offset += len(complete)
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                data = json.loads(line)
            except json.JSONDecodeError:  # a line cut short when the kernel was killed
                continue
            if isinstance(data, dict) and data.get("$report_type") == "TestReport":
                self.reports.setdefault(data["nodeid"], []).append(data)

    def finished(self, nodeid: str) -> bool:
        return any(data.get("when") == "teardown" for data in self.reports.get(nodeid, []))

    def wait_for(self, nodeid: str) -> None:
        """Wait until ``nodeid`` has all its reports, or the boot has ended."""
        while True:
            ended = self.done.is_set()
            self.poll()
            if ended or self.finished(nodeid):
                return
            self.done.wait(0.2)


@attrs.define
class _Run:
    """Every boot of this session, and what the host reported for each kernel test."""

    boots: list[_Boot]
    logs: Path
    by_nodeid: dict[str, _Boot]
    cancel: threading.Event
    threads: list[threading.Thread]
    outcomes: dict[str, str] = attrs.Factory(dict)  # nodeid -> passed, failed, skipped, not run
    summarized: bool = False


_RUN = pytest.StashKey[_Run]()


class _BudgetSpent(Exception):
    """Raised in a test by the alarm: it took longer than its budget."""


class _Inner:
    """Inside the kernel: run only what the host gave this boot, each within its budget, and report."""

    def __init__(self, config: pytest.Config, run_dir: str) -> None:
        self._config = config
        self._reports = os.path.join(run_dir, _REPORTS)
        self._budgets: dict[str, float] = json.loads(Path(run_dir, _NODEIDS).read_text(encoding="utf-8"))

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        deselected = [item for item in items if item.nodeid not in self._budgets]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if item.nodeid in self._budgets]

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
        budget = self._budgets.get(item.nodeid, DEFAULT_BUDGET)
        spent = False

        def alarm(signum: int, frame: FrameType | None) -> None:
            nonlocal spent
            if not spent:
                spent = True
                signal.setitimer(signal.ITIMER_REAL, TEARDOWN_GRACE)
                # pytest.fail's exception: the test fails with this message and the traceback of
                # wherever it was waiting; teardown follows as after any failure.
                pytest.fail(f"{item.nodeid} took longer than its budget of {budget:.0f} s "
                            f"(@pytest.mark.kernel(budget=...), times LBCORE_KERNEL_BUDGET_SCALE); "
                            "stopped here:", pytrace=True)
            raise _BudgetSpent(f"teardown took longer than {TEARDOWN_GRACE:.0f} s after the budget was spent")

        previous = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, budget)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = self._config.hook.pytest_report_to_serializable(config=self._config, report=report)
        with open(self._reports, "a", encoding="utf-8") as file:
            file.write(json.dumps(data) + "\n")


def _inside() -> bool:
    return os.environ.get(IN_UML_ENV) == "1"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``kernel`` marker; inside the kernel, take the host's selection and report.

    Raises:
        OSError, ValueError: inside the kernel, the host's node id list cannot be read.
    """
    if not any(line.split(":")[0].split("(")[0].strip() == _MARKER for line in config.getini("markers")):
        config.addinivalue_line("markers", _MARKER_LINE)
    run_dir = os.environ.get(RUN_ENV)
    if _inside() and run_dir and not config.pluginmanager.has_plugin(_INNER_NAME):
        config.pluginmanager.register(_Inner(config, run_dir), _INNER_NAME)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """On the host, report a kernel test with the outcome it had inside the kernel.

    The first kernel test due starts every boot; each test then waits for its own reports.

    Returns:
        True when the test was reported here; None for other tests, and inside the kernel, so
        that pytest runs them as usual.

    Raises:
        Nothing: a kernel that cannot run the tests makes them fail.
    """
    if _inside() or item.get_closest_marker(_MARKER) is None:
        return None
    run = item.config.stash.get(_RUN, None)
    if run is None:
        run = _start(item.session)
        item.config.stash[_RUN] = run
    boot = run.by_nodeid[item.nodeid]
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    boot.wait_for(item.nodeid)
    reports, outcome = _reports(item, boot, run)
    for report in reports:
        ihook.pytest_runtest_logreport(report=report)
    run.outcomes[item.nodeid] = outcome
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Let the boots that reported every test power off; stop the others (``-x``, Ctrl-C).

    Raises:
        Nothing.
    """
    run = session.config.stash.get(_RUN, None)
    if run is None or _inside():
        return
    for boot in run.boots:
        boot.poll()
        if not all(boot.finished(nodeid) for nodeid in boot.nodeids):
            run.cancel.set()  # every boot has the one event: a session ended early stops them all
    for thread in run.threads:
        thread.join()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say how the kernel tests ran: how many passed, failed and did not run, in which boots.

    Raises:
        Nothing.
    """
    run = config.stash.get(_RUN, None)
    if run is None or run.summarized:
        return
    run.summarized = True  # once, however many conftests import this hook
    counts: dict[str, int] = {}
    for outcome in run.outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    told = ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "skipped", "not run") if counts.get(k))
    write = terminalreporter.write_line
    write(f"lbcore kernel: {len(run.by_nodeid)} test(s) in {len(run.boots)} user-mode Linux boot(s) side by side: "
          f"{told or 'none reported'}")
    for boot in run.boots:
        if boot.result is not None:
            how = (f"kernel up in {boot.result.kernel_seconds:.2f} s, ready in {boot.result.boot_seconds:.2f} s, "
                   f"inner pytest exit {boot.result.returncode}")
        else:
            how = (boot.error or "did not start").splitlines()[0]
        write(f"  boot {boot.number}: {len(boot.nodeids)} test(s), {boot.seconds:.1f} s of a limit of "
              f"{boot.limit:.0f} s; {how}")
    clean = set(run.outcomes.values()) <= {"passed", "skipped"} and len(run.outcomes) == len(run.by_nodeid)
    if clean and "LBCORE_KERNEL_LOGS" not in os.environ:
        shutil.rmtree(run.logs, ignore_errors=True)
    else:
        write(f"  kernel consoles and inner output: {run.logs}/boot-N/")


def _budget(item: pytest.Item, scale: float) -> float:
    marker = item.get_closest_marker(_MARKER)
    budget = marker.kwargs.get("budget", DEFAULT_BUDGET) if marker is not None else DEFAULT_BUDGET
    return float(budget) * scale


def _own_budget(item: pytest.Item) -> bool:
    marker = item.get_closest_marker(_MARKER)
    return marker is not None and "budget" in marker.kwargs


def _start(session: pytest.Session) -> _Run:
    """Split the session's kernel tests into boots and start them all."""
    scale = float(os.environ.get("LBCORE_KERNEL_BUDGET_SCALE", "1"))
    items = [item for item in session.items if item.get_closest_marker(_MARKER) is not None]
    # Units: a test with a budget of its own alone, the others module by module.
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        key = item.nodeid if _own_budget(item) else item.nodeid.split("::")[0]
        units.setdefault(key, []).append(item)
    count = max(1, min(len(units), int(os.environ.get("LBCORE_UML_BOOTS", str(os.cpu_count() or 1)))))
    loads = [0.0] * count
    groups: list[list[pytest.Item]] = [[] for _ in range(count)]
    # Longest first, each to the least loaded boot (LPT); ties go to the lower boot number.
    for unit in sorted(units.values(), key=lambda u: -sum(_budget(i, scale) for i in u)):
        least = loads.index(min(loads))
        groups[least] += unit
        loads[least] += sum(_budget(i, scale) for i in unit)
    logs = Path(os.environ.get("LBCORE_KERNEL_LOGS") or tempfile.mkdtemp(prefix="lbcore-kernel-"))
    order = {item.nodeid: n for n, item in enumerate(items)}
    boots = []
    for number, group in enumerate((g for g in groups if g), start=1):
        group.sort(key=lambda i: order[i.nodeid])  # collection order inside a boot
        budgets = {i.nodeid: _budget(i, scale) for i in group}
        boots.append(_Boot(number=number, nodeids=list(budgets), budgets=budgets, work=logs / f"boot-{number}",
                           limit=BOOT_ALLOWANCE + sum(budgets.values())))
    cancel = threading.Event()
    threads = [threading.Thread(target=boot.run, args=(session.config, cancel), name=f"uml-boot-{boot.number}",
                                daemon=True) for boot in boots]
    for thread in threads:
        thread.start()
    return _Run(boots=boots, logs=logs, by_nodeid={n: b for b in boots for n in b.nodeids}, cancel=cancel,
                threads=threads)


def _reports(item: pytest.Item, boot: _Boot, run: _Run) -> tuple[list[pytest.TestReport], str]:
    """The test's inner reports, or a failure saying why there are none; and its outcome."""
    config = item.config
    found = boot.reports.get(item.nodeid)
    if found:
        reports = [config.hook.pytest_report_from_serializable(config=config, data=data) for data in found]
        reports = [report for report in reports if isinstance(report, pytest.TestReport)]
        if boot.finished(item.nodeid):
            outcome = ("failed" if any(r.failed for r in reports)
                       else "skipped" if any(r.skipped for r in reports) else "passed")
            return reports, outcome
        reason = _why_not_run(item, boot, run, started=True)
        return [*reports, _report(item, "teardown", reason)], "failed"
    reason = _why_not_run(item, boot, run, started=False)
    return [_report(item, "setup"), _report(item, "call", reason), _report(item, "teardown")], "not run"


def _why_not_run(item: pytest.Item, boot: _Boot, run: _Run, *, started: bool) -> str:
    files = f"kernel console: {boot.work / 'console.log'}; inner output: {boot.work / 'output'}"
    if run.cancel.is_set() and boot.result is None and boot.error is None:
        return "not run: the session ended before user-mode Linux ran it"
    if boot.error is not None:
        running = next((n for n in boot.nodeids if n in boot.reports and not boot.finished(n)), None)
        during = f" while {running} ran" if running else ""
        first = boot.error.splitlines()[0]
        if "no exit status" in first:
            first = (f"boot {boot.number} was stopped at its limit of {boot.limit:.0f} s ({BOOT_ALLOWANCE:.0f} s "
                     f"for the boot and the budgets of its {len(boot.nodeids)} tests){during}")
        return f"{'did not finish' if started else 'not run'}: {first}\n{files}"
    assert boot.result is not None
    tail = "\n".join(boot.result.output.splitlines()[-30:])
    return (f"{'did not finish' if started else 'not run'}: boot {boot.number} ended (inner pytest exit "
            f"{boot.result.returncode}) without a report for this test; {files}\ninner output, last lines:\n{tail}")


def _report(
    item: pytest.Item, when: Literal["setup", "call", "teardown"], failure: str | None = None
) -> pytest.TestReport:
    def outcome() -> None:
        if failure is not None:
            pytest.fail(failure, pytrace=False)

    return pytest.TestReport.from_item_and_call(item, pytest.CallInfo.from_call(outcome, when=when))
