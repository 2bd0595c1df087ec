"""Run the ``kernel`` tests inside one user-mode Linux boot and report them as the host's own.

Tests marked ``@pytest.mark.kernel`` need IPVS, which this machine's kernel lacks. pytest collects
them on the host like any test. When the first is due, this plugin boots user-mode Linux once
(:func:`lbcore.testing.uml.run_in_uml`) and runs pytest inside it on their files::

    python -m pytest -p no:cacheprovider --continue-on-collection-errors \\
        --rootdir <rootdir> [-c <inifile>] <file> ...

with ``LBCORE_IN_UML=1`` and ``LBCORE_KERNEL_RUN=<directory>``, a host directory (the kernel's
root is the host's file system) that holds the node ids the host selected. Inside, the same plugin
sees ``LBCORE_IN_UML``, deselects what the host did not select, lets pytest run the rest as usual
(fixtures included), and appends each test report (setup, call, teardown) to ``reports.jsonl`` in
that directory, serialized by pytest's own ``pytest_report_to_serializable`` hook, as pytest-xdist
does for its workers. Back on the host, each kernel test's reports are replayed through
``pytest_runtest_logreport``, so the terminal, ``-x``, ``--junitxml`` and the summary see the
inner outcome (passed; failed with the inner traceback; skipped; xfailed) as the test's own. No
host fixture runs for a kernel test.

Why not the inner ``--junitxml``: JUnit XML turns node ids into class and test names (lossy for
parametrized ids), keeps a failure only as text, and has no xfail; report serialization keeps all.
Why files and not node ids on the inner command line: pytest stops the whole run when one given
node id cannot be collected; with files, one broken module fails only its own tests.

Failure, never skip: when user-mode Linux is not installed, does not boot, times out, or the
inner run reports nothing for a test (its module does not import inside, the run crashed), that
kernel test fails, and its message gives the reason and the tail of the inner output.

Use it from the ``conftest.py`` of a directory of kernel tests by importing the hooks::

    from lbcore.testing.kernel_plugin import (  # noqa: F401 - pytest hooks
        pytest_configure,
        pytest_runtest_protocol,
        pytest_terminal_summary,
    )

(``pytest_plugins = [...]`` would be shorter, but pytest refuses it in a conftest below the
rootdir, which is where kernel tests live.) The hooks act on tests with the ``kernel`` marker,
wherever they are; all the selected ones run in the same boot.

Environment (host): ``LBCORE_UML_TIMEOUT`` (seconds for the boot and the whole inner run; default
900) and ``LBCORE_UML_MEM`` (the kernel's memory; default 512M).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest

from lbcore.errors import LBError
from lbcore.testing.uml import IN_UML_ENV, UMLResult, run_in_uml

__all__ = [
    "RUN_ENV",
    "pytest_configure",
    "pytest_runtest_protocol",
    "pytest_terminal_summary",
]

#: The host directory shared with the inner run: ``nodeids.json`` in, ``reports.jsonl`` out.
RUN_ENV = "LBCORE_KERNEL_RUN"
_MARKER = "kernel"
_MARKER_LINE = f"{_MARKER}: runs inside a user-mode Linux kernel with IPVS (lbcore.testing.kernel_plugin)"
_INNER_NAME = "lbcore-kernel-inner"
_NODEIDS, _REPORTS = "nodeids.json", "reports.jsonl"


@attrs.define
class _Batch:
    """The one inner run: its reports by node id, or why there are none."""

    nodeids: list[str]
    reports: dict[str, list[dict[str, Any]]] = attrs.Factory(dict)
    result: UMLResult | None = None
    error: str | None = None
    seconds: float = 0.0
    summarized: bool = False


_BATCH = pytest.StashKey[_Batch]()


class _Inner:
    """Inside the kernel: run only what the host selected, and write every report for it."""

    def __init__(self, config: pytest.Config, run_dir: str) -> None:
        self._config = config
        self._reports = os.path.join(run_dir, _REPORTS)
        self._selected = set(json.loads(Path(run_dir, _NODEIDS).read_text(encoding="utf-8")))

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        deselected = [item for item in items if item.nodeid not in self._selected]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if item.nodeid in self._selected]

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
    if not any(line.split(":")[0].strip() == _MARKER for line in config.getini("markers")):
        config.addinivalue_line("markers", _MARKER_LINE)
    run_dir = os.environ.get(RUN_ENV)
    if _inside() and run_dir and not config.pluginmanager.has_plugin(_INNER_NAME):
        config.pluginmanager.register(_Inner(config, run_dir), _INNER_NAME)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """On the host, report a kernel test with the outcome it had inside the kernel.

    The first kernel test due boots the kernel and runs them all; the others find their reports.

    Returns:
        True when the test was reported here; None for other tests, and inside the kernel, so
        that pytest runs them as usual.

    Raises:
        Nothing: a kernel that cannot run the tests makes them fail.
    """
    if _inside() or item.get_closest_marker(_MARKER) is None:
        return None
    batch = item.config.stash.get(_BATCH, None)
    if batch is None:
        batch = _run_batch(item.session)
        item.config.stash[_BATCH] = batch
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for report in _reports(item, batch):
        ihook.pytest_runtest_logreport(report=report)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say how the kernel tests ran: in one boot, and how long it took.

    Raises:
        Nothing.
    """
    batch = config.stash.get(_BATCH, None)
    if batch is None or batch.summarized:
        return
    batch.summarized = True  # once, however many conftests import this hook
    count = len(batch.nodeids)
    if batch.result is None:
        terminalreporter.write_line(f"lbcore kernel: {count} test(s) could not run in user-mode Linux")
        return
    result = batch.result
    terminalreporter.write_line(
        f"lbcore kernel: {count} test(s) in one user-mode Linux boot: kernel up in "
        f"{result.kernel_seconds:.2f} s, ready (modules loaded) in {result.boot_seconds:.2f} s, "
        f"inner pytest exit {result.returncode}, {batch.seconds:.2f} s in all"
    )


def _run_batch(session: pytest.Session) -> _Batch:
    config = session.config
    nodeids = [item.nodeid for item in session.items if item.get_closest_marker(_MARKER) is not None]
    batch = _Batch(nodeids=nodeids)
    files = list(dict.fromkeys(nodeid.split("::")[0] for nodeid in nodeids))
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--continue-on-collection-errors"]
    argv += ["--rootdir", str(config.rootpath)]
    if config.inipath is not None:
        argv += ["-c", str(config.inipath)]
    work = tempfile.mkdtemp(prefix="lbcore-kernel-")
    Path(work, _NODEIDS).write_text(json.dumps(nodeids), encoding="utf-8")
    env = {**os.environ, RUN_ENV: work}
    started = time.monotonic()
    try:
        batch.result = run_in_uml(
            [*argv, *files],
            cwd=str(config.rootpath),
            env=env,
            timeout=float(os.environ.get("LBCORE_UML_TIMEOUT", "900")),
            mem=os.environ.get("LBCORE_UML_MEM", "512M"),
            workdir=work,
        )
    except (LBError, OSError) as exc:
        batch.error = f"user-mode Linux could not run the kernel tests: {exc}"
    finally:
        batch.seconds = time.monotonic() - started
        for data in _read_reports(os.path.join(work, _REPORTS)):
            batch.reports.setdefault(data["nodeid"], []).append(data)
        shutil.rmtree(work, ignore_errors=True)
    return batch


def _read_reports(path: str) -> Iterator[dict[str, Any]]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    for line in lines:
        try:
            data = json.loads(line)
        except json.JSONDecodeError:  # the last line of a run that was killed while writing it
            continue
        if isinstance(data, dict) and data.get("$report_type") == "TestReport":
            yield data


def _reports(item: pytest.Item, batch: _Batch) -> list[pytest.TestReport]:
    config = item.config
    found = batch.reports.get(item.nodeid)
    if found:
        reports = [config.hook.pytest_report_from_serializable(config=config, data=data) for data in found]
        return [report for report in reports if isinstance(report, pytest.TestReport)]
    if batch.error is not None:
        reason = batch.error
    else:
        assert batch.result is not None
        reason = (
            f"user-mode Linux ran the kernel tests but reported nothing for this one "
            f"(inner pytest exit {batch.result.returncode}); inner output, last lines:\n"
            + "\n".join(batch.result.output.splitlines()[-60:])
        )
    return [_report(item, "setup"), _report(item, "call", reason), _report(item, "teardown")]


def _report(
    item: pytest.Item, when: Literal["setup", "call", "teardown"], failure: str | None = None
) -> pytest.TestReport:
    def outcome() -> None:
        if failure is not None:
            pytest.fail(failure, pytrace=False)

    return pytest.TestReport.from_item_and_call(item, pytest.CallInfo.from_call(outcome, when=when))
