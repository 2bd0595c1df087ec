"""Kernel tests: real IPVS in user-mode Linux boots side by side (tests/_harness/kernel_plugin.py).

On the host, pytest collects these tests and the plugin runs them inside the kernel; inside
(``LBCORE_IN_UML=1``) they run as plain tests, as root, with the fixtures below. Each test leaves
the kernel as it found it: no IPVS service, no network namespace of its own.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest
from _harness.kernel_plugin import (  # noqa: F401 - pytest hooks, found here by pytest
    pytest_configure,
    pytest_runtest_protocol,
    pytest_sessionfinish,
    pytest_terminal_summary,
)

Run = Callable[..., str]


def _run(*argv: str) -> str:
    """Run a command; return its stdout, or fail the test with its stderr.

    Raises:
        pytest.fail.Exception: the command is missing or exits non-zero.
    """
    if shutil.which(argv[0]) is None:
        package = {"ipvsadm": "ipvsadm", "ip": "iproute2"}.get(argv[0], "?")
        pytest.fail(f"{argv[0]} not found: install Debian's {package!r} package", pytrace=False)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}", pytrace=False)
    return done.stdout


@pytest.fixture
def run() -> Run:
    """``run(*argv)``: run a command in this kernel; its stdout, or the test fails with stderr."""
    return _run


@pytest.fixture
def ipvsadm() -> Iterator[Run]:
    """``ipvsadm(*args)``: run ipvsadm in this kernel; the IPVS table is cleared afterwards.

    Raises:
        pytest.fail.Exception: this kernel has no IPVS (``/proc/net/ip_vs`` is missing).
    """
    try:
        open("/proc/net/ip_vs", encoding="ascii").close()
    except OSError as exc:
        pytest.fail(f"this kernel has no IPVS ({exc}): kernel tests run inside user-mode Linux", pytrace=False)

    def ipvsadm(*args: str) -> str:
        return _run("ipvsadm", *args)

    yield ipvsadm
    _run("ipvsadm", "-C")


@pytest.fixture
def netns() -> Iterator[Callable[[str], str]]:
    """``netns(name)``: make a network namespace with ``lo`` up; all are deleted afterwards."""
    made: list[str] = []

    def make(name: str) -> str:
        _run("ip", "netns", "add", name)
        made.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    yield make
    for name in reversed(made):
        _run("ip", "netns", "del", name)
