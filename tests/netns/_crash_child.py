"""The processes of the SIGKILL harness (tests/netns/test_iptables_crash.py), run as a program in its namespace.

``_crash_child.py serve`` imports lbcore, python-iptables and pyroute2 once (a second or more on a
busy machine), opens nothing, and forks a fresh process for each request, one a line on stdin:

- ``fork apply|converge A|B FILE``: fork a process and print its pid; it waits for ``go``;
- ``go PID [DELAY]``: let it run, wait for it, print ``exit N`` (N < 0: killed by signal -N); with
  DELAY, SIGKILL it DELAY seconds after ``go`` unless it ended before (the parent kills it, so the
  pid cannot have been reused: it stays the child's until the parent reaps it).

``apply`` opens the iptables backend, applies the state and writes the seconds both took to FILE;
``converge`` applies the state twice and writes, as JSON, the ops of each apply and whether read()
gives the state back. Between ``fork`` and ``go`` the test attaches strace to the pid, or times a
random kill from ``go``.

The two states hold every kind of object the backend writes (DNAT services, firewall marks,
Auto-NAT, a redirect, policy routes local and via a gateway, loopback VIPs), and B changes each
kind from A: added, deleted, edited, moved to another table.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback

import iptc  # noqa: F401  (imported here once, not by each fresh process: the backend imports both lazily)
import pyroute2  # noqa: F401
from lbcore_iptables import IPTablesBackend

from lbcore import Balancer, Persistence, RealServer, VirtualService
from lbcore.rules import AutoNat, FirewallMark, LoopbackVIP, PolicyRoute, Redirect
from lbcore.table import Table

#: The dummy link the test makes in the namespace: Auto-NAT's interface, the gateway's network.
LINK = "lbcrash0"
GATEWAY = "10.93.0.2"


def _service(port: int, weights: tuple[int, ...], **kwargs: object) -> VirtualService:
    return VirtualService("tcp", "10.90.0.100", port, scheduler="rr", real_servers=[
        RealServer(f"10.91.{i}.2", 80, forward="nat", weight=w) for i, w in enumerate(weights, 1)], **kwargs)


def states() -> dict[str, Table]:
    """State A and state B."""
    fwmark = VirtualService(fwmark=1, scheduler="rr", real_servers=[RealServer("10.91.1.2", 0, forward="nat")])
    a = Table([_service(80, (1, 1)), _service(443, (1,), persistence=Persistence(60, netmask="255.255.255.255")),
               fwmark],
              rules=[FirewallMark(1, "tcp", ports=(80, 443)), FirewallMark(2, "udp", ports=(53,)),
                     AutoNat(LINK, ["10.91.0.0/16"]), Redirect("10.92.0.9"),
                     PolicyRoute(1, 100), PolicyRoute(2, 101, via=GATEWAY), PolicyRoute(4, 104),
                     LoopbackVIP("10.92.0.1"), LoopbackVIP("10.92.0.2")])
    b = Table([_service(80, (1, 0, 2)), _service(8080, (1, 1), persistence=Persistence(30))],
              rules=[FirewallMark(1, "tcp", ports=(80,)), FirewallMark(3, "tcp", ports=(25,)),
                     AutoNat(LINK, ["10.91.0.0/16", "10.95.0.0/24"]),
                     PolicyRoute(1, 100, via=GATEWAY), PolicyRoute(2, 102, via=GATEWAY), PolicyRoute(3, 103),
                     LoopbackVIP("10.92.0.2"), LoopbackVIP("10.92.0.3")])
    return {"A": a, "B": b}


def run(mode: str, name: str, out: str) -> None:
    """Apply (``apply``) or converge on (``converge``) state ``name`` in a backend of this process."""
    start = time.perf_counter()
    desired = states()[name]
    backend = IPTablesBackend(legacy_beside_nft=True, weighted="random")
    lb = Balancer(backend)
    if mode == "apply":
        lb.apply(desired)
        result: object = time.perf_counter() - start
    else:
        first = lb.apply(desired)
        second = lb.apply(desired)
        result = {"first": [str(op) for op in first], "second": [str(op) for op in second],
                  "read": backend.read() == desired}
    with open(out + ".part", "w", encoding="utf-8") as f:  # whole or absent, even if killed while writing
        json.dump(result, f)
    os.replace(out + ".part", out)


def serve() -> None:
    """Fork a fresh process per request (see the module's docstring)."""
    waiting: dict[int, int] = {}  # pid -> the pipe its "go" goes down
    for line in sys.stdin:
        verb, *args = line.split()
        if verb == "fork":
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(write_end)
                os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stdout is the protocol's
                os.read(read_end, 1)
                code = 0
                try:
                    run(*args)
                except BaseException:
                    traceback.print_exc()
                    code = 1
                os._exit(code)
            os.close(read_end)
            waiting[pid] = write_end
            print(pid, flush=True)
        elif verb == "go":
            pid = int(args[0])
            write_end = waiting.pop(pid)
            os.write(write_end, b"g")
            os.close(write_end)
            reaped, status = 0, 0
            if len(args) > 1:
                deadline = time.perf_counter() + float(args[1])
                while not reaped and time.perf_counter() < deadline:
                    reaped, status = os.waitpid(pid, os.WNOHANG)
                    time.sleep(0.0005)
                if not reaped:  # not reaped, so the pid is still the child's
                    os.kill(pid, signal.SIGKILL)
            if not reaped:
                _, status = os.waitpid(pid, 0)
            print("exit", os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    serve()
