"""The sync daemon's start and stop when the kernel does not acknowledge the stop.

IPVS_CMD_DEL_DAEMON gets no ack when the sync thread is stopped before it first ran: the kernel
returns kthread_stop()'s -EINTR, and netlink_rcv_skb() sends no ack for -EINTR. stop_daemon()
waited for that ack forever (the docs' HA-pair block hung about one run in two). Here the race is
made certain: the process runs SCHED_FIFO on user-mode Linux's one CPU, so the new sync thread
(SCHED_NORMAL) cannot run between the start and the stop.

Each case runs as its own process in a namespace of its own (``eth1`` for the daemon), after
another namespace that used IPVS and a sync daemon was torn down, as the docs' blocks run.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'backends'}"}
CYCLES = 5
Run = Callable[..., str]

SCRIPT = """
import json, os, sys, time
from lbcore import Balancer, RealServer, VirtualService
from lbcore.errors import BackendError
from lbcore_ipvs import IPVSBackend
from lbcore_ipvs._codec import CMD_DEL_DAEMON, CMD_NEW_DAEMON, daemon_nest
from lbcore_ipvs._netlink import IPVSSocket

case, cycles = sys.argv[1], int(sys.argv[2])
if case != "docs":
    # The new sync thread is SCHED_NORMAL: on one CPU it cannot run before this process blocks.
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
out = {"daemons": []}
backend = IPVSBackend(vips=["192.0.2.10"])
if case == "timeout":
    sock = IPVSSocket(timeout=1)
    sock.request(CMD_NEW_DAEMON, daemon_nest("master", "eth1", 7))
    try:
        sock.request(CMD_DEL_DAEMON, daemon_nest("master"))
        out["error"] = None
    except BackendError as exc:
        out["error"] = [type(exc).__name__, str(exc), exc.errno]
    out["daemons"].append(backend.daemons())
else:
    if case == "docs":
        Balancer(backend).apply([VirtualService(protocol="tcp", address="192.0.2.10", port=80, scheduler="sh",
                                                real_servers=[RealServer("198.51.100.11", 80)])])
    for _ in range(cycles):
        backend.start_daemon("master", "eth1", syncid=7)
        if case == "docs":
            assert backend.daemons() == [{"state": "master", "interface": "eth1", "syncid": 7}]
        backend.stop_daemon("master")
        out["daemons"].append(backend.daemons())
    out["unanswered"] = backend.socket.unanswered
print(json.dumps(out))
"""


@pytest.fixture
def director(run: Run, netns: Callable[[str], str]) -> str:
    """A namespace with ``eth0`` and ``eth1``, made after another that used IPVS was torn down."""
    old = "lbd-old"
    run("ip", "netns", "add", old)
    try:
        run("ip", "-n", old, "link", "add", "eth1", "type", "dummy")
        run("ip", "-n", old, "link", "set", "eth1", "up")
        run("ip", "netns", "exec", old, "ipvsadm", "-A", "-t", "192.0.2.10:80", "-s", "rr")
        run("ip", "netns", "exec", old, "ipvsadm", "--start-daemon", "master", "--mcast-interface", "eth1")
        run("ip", "netns", "exec", old, "ipvsadm", "--stop-daemon", "master")
    finally:
        run("ip", "netns", "del", old)
    name = netns("lbd-new")
    for link, address in (("eth0", "198.51.100.1/24"), ("eth1", "10.0.0.1/24")):
        run("ip", "-n", name, "link", "add", link, "type", "dummy")
        run("ip", "-n", name, "addr", "add", address, "dev", link)
        run("ip", "-n", name, "link", "set", link, "up")
    return name


def inside(namespace: str, case: str, cycles: int = CYCLES) -> dict[str, Any]:
    """Run SCRIPT's ``case`` in ``namespace``; what it printed. A hang fails after 120 s."""
    done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-X", "faulthandler", "-c", SCRIPT,
                           case, str(cycles)], env=ENV, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_stop_daemon_returns_when_the_kernel_stopped_a_thread_that_never_ran(director: str) -> None:
    result = inside(director, "race")
    assert result["daemons"] == [[]] * CYCLES
    assert result["unanswered"] == CYCLES  # every stop came before its thread ran: none was acked


def test_the_docs_ha_pair_sequence_starts_and_stops_the_daemon_every_time(director: str) -> None:
    result = inside(director, "docs")
    assert result["daemons"] == [[]] * CYCLES


def test_a_reply_that_never_comes_raises_backend_error_naming_the_command(director: str) -> None:
    result = inside(director, "timeout", cycles=1)
    assert result["error"] == ["BackendError", "ipvs: the kernel did not answer IPVS_CMD_DEL_DAEMON (sequence 3) "
                               "within 1 s", errno.ETIMEDOUT]
    assert result["daemons"] == [[]]  # the kernel stopped it all the same
