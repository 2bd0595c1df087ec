"""Run the ``kernel`` tests in user-mode Linux boots side by side, and report them as the host's own.

Tests marked ``@pytest.mark.kernel`` need IPVS, which this machine's kernel lacks. pytest collects
them on the host like any test. When the first is due, this plugin writes a plan (the kernel tests
in units, longest first: :func:`split`) and boots user-mode Linux several times side by side
(:func:`_harness.uml.run_in_uml`; the kernel has one CPU, so by default a boot per core and one
more to fill the time that trace pauses leave idle), each
running pytest inside on every kernel test file::

    python -m pytest -p no:cacheprovider --continue-on-collection-errors \\
        --rootdir <rootdir> [-c <inifile>] <file> ...

with ``LBCORE_IN_UML=1`` and ``LBCORE_KERNEL_RUN=<directory>``, a host directory of that boot
(the kernel's root is the host's file system). Inside, the same plugin sees ``LBCORE_IN_UML``,
deselects what the host did not select, and goes through the plan's units in order: it claims a
unit by making a file in the shared ``claims/`` directory (``O_EXCL``: one boot wins) and runs its
tests, or leaves it to the boot that did. So the boots share the work as it comes, whatever each
test really takes, like pytest-xdist's load scheduling. Each test report (setup, call, teardown)
is appended to the boot's ``reports.jsonl``, serialized by pytest's own
``pytest_report_to_serializable`` hook, as pytest-xdist does for its workers. On the host, each
kernel test waits for its reports from whichever boot took it and replays them through
``pytest_runtest_logreport``, so the terminal, ``-x``, ``--junitxml`` and the summary see the
inner outcome (passed; failed with the inner traceback; skipped; xfailed) as the test's own. No
host fixture runs for a kernel test.

**Time follows the work.** Every kernel test has a budget in seconds:
``@pytest.mark.kernel(budget=S)``, or :data:`DEFAULT_BUDGET`. Inside, a test still running when
its budget is spent fails there and then (an alarm interrupts it, wherever it waits), with a
message that says so; its fixtures are torn down and the next test runs. On the host, a watchdog
per boot stops a kernel that no longer makes progress: no report for :data:`BOOT_ALLOWANCE`
seconds outside a test, or a test that the inner alarm did not stop. There is no wall for the
whole suite.

**The kernel console** (IPVS warns on every packet it drops) goes to ``console.log`` in each
boot's directory under ``LBCORE_KERNEL_LOGS``, with the inner output (``output``) and PID 1's log
(``init.log``). A failure that the kernel may explain names those files; the directory is removed
after a run in which every kernel test passed.

Why not the inner ``--junitxml``: JUnit XML turns node ids into class and test names (lossy for
parametrized ids), keeps a failure only as text, and has no xfail; report serialization keeps all.
Why files and not node ids on the inner command line: pytest stops the whole run when one given
node id cannot be collected; with files, one broken module fails only its own tests.

Failure, never skip: when user-mode Linux is not installed, does not boot, or stops before a test
reported (its module does not import inside, the run crashed, the watchdog stopped it), that
kernel test fails, and its message gives the reason and where to read more. The summary counts
the kernel tests that passed, failed, and did not run.

Use it from the ``conftest.py`` of a directory of kernel tests by importing the hooks::

    from _harness.kernel_plugin import (  # noqa: F401 - pytest hooks
        pytest_configure,
        pytest_runtest_protocol,
        pytest_sessionfinish,
        pytest_terminal_summary,
    )

(``pytest_plugins = [...]`` would be shorter, but pytest refuses it in a conftest below the
rootdir, which is where kernel tests live.)

Environment (host): ``LBCORE_UML_BOOTS`` (boots side by side; default: the number of CPUs + 1),
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
from collections.abc import Iterator, Sequence
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
    "split",
]

#: The host directory of one boot: its ``reports.jsonl``; ``plan.json`` and ``claims/`` are in
#: the directory above, shared by every boot of the session.
RUN_ENV = "LBCORE_KERNEL_RUN"
#: Seconds a kernel test may take when its marker names no budget.
DEFAULT_BUDGET = 60.0
#: Seconds a boot may take before its first test and after its last: the kernel's boot, pytest's
#: start and collection inside it, and power-off.
BOOT_ALLOWANCE = 120.0
#: Seconds a test that overran its budget has for its teardown.
TEARDOWN_GRACE = 30.0
_MARKER = "kernel"
_MARKER_LINE = (f"{_MARKER}(budget=seconds): runs inside a user-mode Linux kernel with IPVS, within its budget "
                "(tests/_harness/kernel_plugin.py)")
_INNER_NAME = "lbcore-kernel-inner"
_PLAN, _CLAIMS, _REPORTS = "plan.json", "claims", "reports.jsonl"


def split(tests: Sequence[tuple[str, float, bool]]) -> list[list[str]]:
    """Units of work for the boots, in the order they should be taken.

    Args:
        tests: (node id, budget, whether the budget is the test's own), in collection order.

    Returns:
        The units, longest budget first (so that the long tests start early and the short ones
        fill the ends); a unit's node ids in collection order. A test with a budget of its own is
        a unit alone; the others go with the rest of their module, so that a module's tests run
        in one boot, one after another.
    """
    units: dict[str, list[tuple[str, float]]] = {}
    for nodeid, budget, own in tests:
        units.setdefault(nodeid if own else nodeid.split("::")[0], []).append((nodeid, budget))
    ordered = sorted(units.values(), key=lambda u: -sum(budget for _, budget in u))  # stable: ties in order
    return [[nodeid for nodeid, _ in unit] for unit in ordered]


@attrs.define
class _Boot:
    """One user-mode Linux boot: the reports of the tests it took, as they come, and how it ended."""

    number: int
    work: Path
    reports: dict[str, list[dict[str, Any]]] = attrs.Factory(dict)
    current: tuple[str, float, float] | None = None  # (node id, its budget, host time it started)
    progress: float = attrs.Factory(time.monotonic)  # host time of the last line it wrote
    result: UMLResult | None = None
    error: str | None = None
    stopped: str | None = None  # why the host stopped it, if it did
    seconds: float = 0.0
    done: threading.Event = attrs.Factory(threading.Event)
    cancel: threading.Event = attrs.Factory(threading.Event)
    lock: threading.Lock = attrs.Factory(threading.Lock)
    _offset: int = 0

    def run(self, config: pytest.Config, files: list[str], limit: float) -> None:
        """Boot, run tests inside until none is left, and note how it went (in a thread of its own)."""
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--continue-on-collection-errors"]
        argv += ["--rootdir", str(config.rootpath)]
        if config.inipath is not None:
            argv += ["-c", str(config.inipath)]
        self.work.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            self.result = run_in_uml(
                [*argv, *files],
                cwd=str(config.rootpath),
                env={**os.environ, RUN_ENV: str(self.work)},
                timeout=limit,
                mem=os.environ.get("LBCORE_UML_MEM", "512M"),
                workdir=str(self.work),
                cancel=self.cancel,
            )
        except (LBError, OSError) as exc:
            self.error = str(exc)
        finally:
            self.seconds = time.monotonic() - started
            self.done.set()

    def poll(self) -> None:
        """Take the lines the inner run has written since the last call."""
        with self.lock:
            try:
                with open(self.work / _REPORTS, "rb") as file:
                    file.seek(self._offset)
                    chunk = file.read()
            except FileNotFoundError:
                return
            complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits for the next call
            if complete:
                self._offset += len(complete)
                self.progress = time.monotonic()
            for line in complete.decode("utf-8", errors="replace").splitlines():
                try:
                    data = json.loads(line)
                except json.JSONDecodeError:  # a line cut short when the kernel was killed
                    continue
                if not isinstance(data, dict):
                    continue
                if "$start" in data:
                    self.current = (data["$start"], float(data["budget"]), time.monotonic())
                elif data.get("$report_type") == "TestReport":
                    self.reports.setdefault(data["nodeid"], []).append(data)
                    if data.get("when") == "teardown":
                        self.current = None

    def finished(self, nodeid: str) -> bool:
        return any(data.get("when") == "teardown" for data in self.reports.get(nodeid, []))

    def watch(self) -> None:
        """Stop the kernel when it stops making progress (in a thread of its own).

        The inner alarm fails a test past its budget; this is for a kernel that no longer runs
        at all: no line for BOOT_ALLOWANCE seconds between tests, or a test past its budget and
        the teardown grace by BOOT_ALLOWANCE.
        """
        while not self.done.wait(1.0):
            self.poll()
            now = time.monotonic()
            if self.current is not None:
                nodeid, budget, since = self.current
                if now - since > budget + TEARDOWN_GRACE + BOOT_ALLOWANCE:
                    self.stopped = (f"boot {self.number} was stopped: {nodeid} ran {now - since:.0f} s, past its "
                                    f"budget of {budget:.0f} s, and the kernel did not stop it")
            elif now - self.progress > BOOT_ALLOWANCE:
                self.stopped = (f"boot {self.number} was stopped: no progress for {BOOT_ALLOWANCE:.0f} s "
                                "outside a test")
            if self.stopped:
                self.cancel.set()
                return


@attrs.define
class _Run:
    """Every boot of this session, and what the host reported for each kernel test."""

    boots: list[_Boot]
    logs: Path
    nodeids: list[str]
    threads: list[threading.Thread]
    outcomes: dict[str, str] = attrs.Factory(dict)  # nodeid -> passed, failed, skipped, not run
    summarized: bool = False

    def wait_for(self, nodeid: str) -> tuple[_Boot | None, bool]:
        """Wait until a boot has reported ``nodeid`` in full, or no boot can any more.

        Returns:
            The boot that took it (None if none did), and whether its reports are complete.
        """
        while True:
            ended = all(boot.done.is_set() for boot in self.boots)
            for boot in self.boots:
                boot.poll()
                if boot.finished(nodeid):
                    return boot, True
                if nodeid in boot.reports and boot.done.is_set():
                    return boot, False
            if ended:
                return None, False
            self.boots[0].done.wait(0.2)


_RUN = pytest.StashKey[_Run]()


class _BudgetSpent(Exception):
    """Raised in a test by the alarm: it took longer than its budget."""


class _Inner:
    """Inside the kernel: take the units no other boot took yet, run each test within its budget, report."""

    def __init__(self, config: pytest.Config, run_dir: str) -> None:
        self._config = config
        self._reports = os.path.join(run_dir, _REPORTS)
        shared = Path(run_dir).parent
        plan = json.loads((shared / _PLAN).read_text(encoding="utf-8"))
        self._budgets: dict[str, float] = plan["budgets"]
        self._unit = {nodeid: n for n, unit in enumerate(plan["units"]) for nodeid in unit}
        self._claims = shared / _CLAIMS
        self._name = Path(run_dir).name
        self._mine: set[int] = set()

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        deselected = [item for item in items if item.nodeid not in self._budgets]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
        order = {item.nodeid: n for n, item in enumerate(items)}
        items[:] = sorted((item for item in items if item.nodeid in self._budgets),
                          key=lambda item: (self._unit[item.nodeid], order[item.nodeid]))

    def _claim(self, unit: int) -> bool:
        """Take ``unit`` for this boot, unless another boot has (a file made with O_EXCL on the host)."""
        if unit in self._mine:
            return True
        try:
            fd = os.open(self._claims / str(unit), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as file:
            file.write(self._name)
        self._mine.add(unit)
        return True

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        """pytest's own loop (``_pytest.main.pytest_runtestloop``), over the units this boot claims.

        A unit's last test is torn down with no next item: the next one this boot runs may be
        anywhere, so nothing set up for this one may stay up for it.
        """
        if session.testsfailed and not session.config.option.continue_on_collection_errors:
            raise session.Interrupted(f"{session.testsfailed} error(s) during collection")
        if session.config.option.collectonly:
            return True
        items = session.items
        for i, item in enumerate(items):
            unit = self._unit[item.nodeid]
            if not self._claim(unit):
                continue  # another boot runs it and reports it
            following = items[i + 1] if i + 1 < len(items) else None
            nextitem = following if following is not None and self._unit[following.nodeid] == unit else None
            self._write({"$start": item.nodeid, "budget": self._budgets[item.nodeid]})
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            if session.shouldfail:
                raise session.Failed(session.shouldfail)
            if session.shouldstop:
                raise session.Interrupted(session.shouldstop)
        return True

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        self._arm(item)
        yield

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)

    def _arm(self, item: pytest.Item) -> None:
        """Fail the test, wherever it waits, once its budget is spent; then give its teardown a grace."""
        budget = self._budgets[item.nodeid]
        spent = False

        def alarm(signum: int, frame: FrameType | None) -> None:
            __tracebackhide__ = True  # the traceback ends where the test was, not here
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

        signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, budget)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._write(self._config.hook.pytest_report_to_serializable(config=self._config, report=report))

    def _write(self, data: dict[str, Any]) -> None:
        with open(self._reports, "a", encoding="utf-8") as file:
            file.write(json.dumps(data) + "\n")


def _inside() -> bool:
    return os.environ.get(IN_UML_ENV) == "1"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``kernel`` marker; inside the kernel, take the host's plan and report.

    Raises:
        OSError, ValueError: inside the kernel, the host's plan cannot be read.
    """
    if not any(line.split(":")[0].split("(")[0].strip() == _MARKER for line in config.getini("markers")):
        config.addinivalue_line("markers", _MARKER_LINE)
    run_dir = os.environ.get(RUN_ENV)
    if _inside() and run_dir and not config.pluginmanager.has_plugin(_INNER_NAME):
        config.pluginmanager.register(_Inner(config, run_dir), _INNER_NAME)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """On the host, report a kernel test with the outcome it had inside the kernel.

    The first kernel test due starts every boot; each test then waits for its own reports,
    from whichever boot took it.

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
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    boot, complete = run.wait_for(item.nodeid)
    reports, outcome = _reports(item, boot, complete, run)
    for report in reports:
        ihook.pytest_runtest_logreport(report=report)
    run.outcomes[item.nodeid] = outcome
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Let the boots power off once every test is reported; stop them if the session ended early.

    Raises:
        Nothing.
    """
    run = session.config.stash.get(_RUN, None)
    if run is None or _inside():
        return
    if len(run.outcomes) < len(run.nodeids):  # -x, Ctrl-C: what is left would run for nobody
        for boot in run.boots:
            boot.cancel.set()
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
    write(f"lbcore kernel: {len(run.nodeids)} test(s) in {len(run.boots)} user-mode Linux boot(s) side by side: "
          f"{told or 'none reported'}")
    for boot in run.boots:
        if boot.stopped is not None:
            how = boot.stopped
        elif boot.result is not None:
            how = (f"kernel up in {boot.result.kernel_seconds:.2f} s, ready in {boot.result.boot_seconds:.2f} s, "
                   f"inner pytest exit {boot.result.returncode}")
        else:
            how = (boot.error or "did not start").splitlines()[0]
        ran = sum(1 for nodeid in boot.reports if boot.finished(nodeid))
        write(f"  boot {boot.number}: {ran} test(s) in {boot.seconds:.1f} s; {how}")
    clean = set(run.outcomes.values()) <= {"passed", "skipped"} and len(run.outcomes) == len(run.nodeids)
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
    """Write the plan of this session's kernel tests and start the boots, which share it out."""
    scale = float(os.environ.get("LBCORE_KERNEL_BUDGET_SCALE", "1"))
    items = [item for item in session.items if item.get_closest_marker(_MARKER) is not None]
    tests = [(item.nodeid, _budget(item, scale), _own_budget(item)) for item in items]
    units = split(tests)
    budgets = {nodeid: budget for nodeid, budget, _ in tests}
    logs = Path(os.environ.get("LBCORE_KERNEL_LOGS") or tempfile.mkdtemp(prefix="lbcore-kernel-"))
    shutil.rmtree(logs / _CLAIMS, ignore_errors=True)
    (logs / _CLAIMS).mkdir(parents=True)
    (logs / _PLAN).write_text(json.dumps({"units": units, "budgets": budgets}), encoding="utf-8")
    # One boot more than cores: a boot's kernel has one CPU, and the DR traces' pauses leave it idle.
    count = max(1, min(len(units), int(os.environ.get("LBCORE_UML_BOOTS", str((os.cpu_count() or 1) + 1)))))
    boots = [_Boot(number=n, work=logs / f"boot-{n}") for n in range(1, count + 1)]
    for boot in boots:
        shutil.rmtree(boot.work, ignore_errors=True)
    files = list(dict.fromkeys(nodeid.split("::")[0] for nodeid in budgets))
    # A boot's last resort, should its watchdog fail too: everything in one boot, plus its allowance.
    limit = 2 * BOOT_ALLOWANCE + sum(budgets.values()) + TEARDOWN_GRACE * len(budgets)
    threads = []
    for boot in boots:
        threads.append(threading.Thread(target=boot.run, args=(session.config, files, limit),
                                        name=f"uml-boot-{boot.number}", daemon=True))
        threads.append(threading.Thread(target=boot.watch, name=f"uml-watch-{boot.number}", daemon=True))
    for thread in threads:
        thread.start()
    return _Run(boots=boots, logs=logs, nodeids=[nodeid for nodeid, _, _ in tests], threads=threads)


def _reports(item: pytest.Item, boot: _Boot | None, complete: bool, run: _Run) -> tuple[list[pytest.TestReport], str]:
    """The test's inner reports, or a failure saying why there are none; and its outcome."""
    config = item.config
    if boot is not None:
        found = [config.hook.pytest_report_from_serializable(config=config, data=data)
                 for data in boot.reports[item.nodeid]]
        reports = [report for report in found if isinstance(report, pytest.TestReport)]
        if complete:
            outcome = ("failed" if any(r.failed for r in reports)
                       else "skipped" if any(r.skipped for r in reports) else "passed")
            return reports, outcome
        return [*reports, _report(item, "teardown", f"did not finish: {_how_it_ended(boot)}")], "failed"
    ended = "\n".join(f"boot {b.number}: {_how_it_ended(b)}" for b in run.boots)
    reason = f"not run: no user-mode Linux boot got to it\n{ended}"
    return [_report(item, "setup"), _report(item, "call", reason), _report(item, "teardown")], "not run"


def _how_it_ended(boot: _Boot) -> str:
    files = f"kernel console: {boot.work / 'console.log'}; inner output: {boot.work / 'output'}"
    if boot.stopped is not None:
        return f"{boot.stopped}; {files}"
    if boot.error is not None:
        return f"{boot.error.splitlines()[0]}; {files}"
    if boot.result is None:
        return "the session ended before it finished"
    tail = "\n".join(boot.result.output.splitlines()[-30:])
    return f"it ended (inner pytest exit {boot.result.returncode}); {files}\ninner output, last lines:\n{tail}"


def _report(
    item: pytest.Item, when: Literal["setup", "call", "teardown"], failure: str | None = None
) -> pytest.TestReport:
    def outcome() -> None:
        if failure is not None:
            pytest.fail(failure, pytrace=False)

    return pytest.TestReport.from_item_and_call(item, pytest.CallInfo.from_call(outcome, when=when))
