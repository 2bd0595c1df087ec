"""The health monitor drives real IPVS: quiesce and graceful drain, shown with real TCP traffic.

Topology (:class:`_harness.kernel_replay.Topology`, NAT), all inside user-mode Linux::

    client netns "client"         director (the monitor, IPVS)           real server netns rs1, rs2
    10.0.7.1, 10.0.7.2  ------  VIP 10.0.0.99:80  -------------------  10.1.N.2:80  the service
                                                                       10.1.N.2:8081  its health agent

Each real server answers on port 80 with its address (``_harness._peers``). The monitor checks
port 8081, where a small agent accepts connections: stopping the agent fails the check while the
service itself still answers, so whatever the client sees afterwards is IPVS's doing, not the real
server's. The monitor runs on asyncio in a thread of its own, with an :class:`IPVSBackend` behind a
:class:`Balancer` (plan, then apply), as in production; the test reads the kernel through another
IPVSBackend and ipvsadm.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from _harness.kernel_replay import CLIENT_NS, Topology
from lbcore_ipvs import IPVSBackend

from lbcore import Balancer, RealServer, VirtualService
from lbcore.health import Action, AsyncioProber, CheckedService, Event, EventKind, Monitor, Policy, TCPCheck

pytestmark = pytest.mark.kernel

T = TypeVar("T")
# Not 10.0.0.100 and up: the differential traces use those, and IPVS keeps entries for minutes.
VIP, PORT, AGENT_PORT = "10.0.0.99", 80, 8081
# The drain test's service has a port of its own: IPVS gives a re-added real server of the same
# service its old counters back (the dest comes back from the trash), TIME_WAIT entries included.
DRAIN_PORT = 8000
RS1, RS2 = "10.1.1.2", "10.1.2.2"
CLIENTS = ["10.0.7.1", "10.0.7.2"]
# A failure here is a refused connection, which comes at once; the timeout only has to be long
# enough that a busy machine never turns a slow answer into a failure.
POLICY = Policy(interval=0.2, timeout=2.0, fall=2, rise=2)

# The health agent: accept and close, until killed.
AGENT = """
import socket, sys
listener = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    listener.accept()[0].close()
"""

# One long TCP flow through the VIP: connect, say which real server answered, then on each stdin
# line "send" send 4 KiB, and on "finish" send our FIN and read to the real server's FIN. Prints
# "clean" when the flow ends with both FINs, or the error (a reset shows as ConnectionResetError).
FLOW = f"""
import socket, sys
sock = socket.socket()
sock.bind((sys.argv[1], 0))
sock.settimeout(5)
sock.connect(("{VIP}", int(sys.argv[2])))
print(sock.makefile().readline().strip(), flush=True)
try:
    for line in sys.stdin:
        if line.strip() == "send":
            sock.sendall(b"x" * 4096)
            print("sent", flush=True)
        else:
            sock.shutdown(socket.SHUT_WR)
            rest = sock.recv(4096)
            print("clean" if rest == b"" else "data after FIN: %r" % rest[:40], flush=True)
            break
except OSError as exc:
    print(type(exc).__name__, exc, flush=True)
"""


def peer(netns: str, code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-I", "-c", code, *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)


def say(process: subprocess.Popen[str], line: str) -> str:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


class Agents:
    """A health agent on port 8081 of each real server; ``stop(rs)`` and ``start(rs)`` fail and mend its check."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.running: dict[str, subprocess.Popen[str]] = {}

    def start(self, rs: str) -> None:
        process = peer(self.topology.ns(Topology.server_ns(rs)), AGENT, rs, str(AGENT_PORT))
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if line != "ready":
            stop(process)
            pytest.fail(f"the health agent on {rs} did not start: {line}")
        self.running[rs] = process

    def stop(self, rs: str) -> None:
        stop(self.running.pop(rs))

    def close(self) -> None:
        for process in self.running.values():
            stop(process)


class Clients:
    """New connections through the VIP from the topology's client peer: which real server answered."""

    def __init__(self, topology: Topology) -> None:
        assert topology.client is not None
        self.client = topology.client
        self.next = 0

    def open(self, count: int, port: int = PORT) -> list[str]:
        """Open ``count`` connections to ``VIP:port`` and close them; the real server each reached."""
        reached = []
        for _ in range(count):
            self.next += 1
            ident = f"c{self.next}"
            # A fresh client port each time: a reused one would meet its old IPVS entry.
            answer = say(self.client, f"open {ident} tcp {CLIENTS[0]} {20000 + self.next} {VIP} {port}")
            assert answer.split()[0] == ident, answer
            reached.append(answer.split()[1].split(":")[0])
            assert say(self.client, f"close {ident}") == f"{ident} closed"
        return reached


class MonitorThread:
    """A Monitor on an asyncio loop in its own thread; its events arrive in a thread-safe queue."""

    def __init__(self, balancer: Balancer, config: CheckedService) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.events: queue.Queue[Event] = queue.Queue()
        self.monitor = self.call(lambda: Monitor(balancer, [config], AsyncioProber(self.loop)))
        self.call(lambda: self.monitor.subscribe(self.events.put))
        self.call(self.monitor.start)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the loop's thread (the monitor is not thread-safe) and return its result."""
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout=10)

    def wait(self, kind: EventKind, address: str | None = None, limit: float = 30.0) -> Event:
        """The next event of ``kind`` (about ``address``), once acted on; earlier ones of other kinds are dropped."""
        deadline = time.monotonic() + limit
        while True:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {kind} event for {address} within {limit} s") from None
            if event.kind is kind and (address is None or str(event.address) == address):
                # The monitor emits an event, then acts in the same callback: once the loop has run
                # this no-op after it, the kernel holds the change.
                self.call(lambda: None)
                return event
            assert event.kind is not EventKind.ERROR, event

    def close(self) -> None:
        self.call(self.monitor.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def service(port: int = PORT) -> VirtualService:
    return VirtualService(protocol="tcp", address=VIP, port=port, scheduler="rr",
                          real_servers=[RealServer(rs, PORT, forward="nat") for rs in (RS1, RS2)])


@pytest.fixture
def rig(ipvsadm: Callable[..., str]) -> Iterator[tuple[Topology, Agents, IPVSBackend]]:
    """The topology, a health agent on each real server, and an IPVSBackend to read the kernel with."""
    with Topology("nat", VIP, CLIENTS, [RS1, RS2], port=PORT) as topology:
        agents = Agents(topology)
        kernel = IPVSBackend(vips=[VIP])
        try:
            for rs in (RS1, RS2):
                agents.start(rs)
            yield topology, agents, kernel
        finally:
            agents.close()
            kernel.close()


def weights(kernel: IPVSBackend, port: int = PORT) -> dict[str, int]:
    held = kernel.read().get(service(port).key)
    assert held is not None
    return {str(rs.address): rs.weight for rs in held.real_servers}


def counts(kernel: IPVSBackend, rs: str, port: int = PORT) -> tuple[int, int]:
    """ActiveConn and InActConn of a real server, as the kernel counts them."""
    entry: dict[str, Any] = kernel.stats()[service(port).key]["real_servers"]
    for (address, _), value in entry.items():
        if str(address) == rs:
            return int(value["active"]), int(value["inactive"])
    raise AssertionError(f"{rs} is not in the service: {entry}")


def test_a_quiesced_real_server_gets_no_new_connection_and_keeps_its_live_one(rig: Any, ipvsadm: Any) -> None:
    topology, agents, kernel = rig
    clients = Clients(topology)
    thread = MonitorThread(Balancer(IPVSBackend(vips=[VIP])), CheckedService(
        service=service(), check=TCPCheck(port=AGENT_PORT), policy=POLICY, action=Action.QUIESCE))
    flow = None
    try:
        assert weights(kernel) == {RS1: 1, RS2: 1}  # the monitor put the service in the kernel
        assert set(clients.open(6)) == {RS1, RS2}  # rr: both get new connections
        # A live connection to each real server (rr alternates), held across the failure.
        flows = [peer(topology.ns(CLIENT_NS), FLOW, CLIENTS[1], str(PORT)) for _ in range(2)]
        reached = [f.stdout.readline().strip().split(":")[0] for f in flows if f.stdout is not None]
        assert sorted(reached) == [RS1, RS2], reached
        flow = flows[reached.index(RS1)]
        stop(flows[reached.index(RS2)])

        agents.stop(RS1)
        down = thread.wait(EventKind.DOWN, RS1)
        assert "ConnectionRefused" in down.detail
        assert weights(kernel) == {RS1: 0, RS2: 1}
        # IPVS sends every new connection to the other real server ...
        assert clients.open(20) == [RS2] * 20
        # ... while the live one to the quiesced server carries on, and ends cleanly.
        assert counts(kernel, RS1)[0] == 1
        assert say(flow, "send") == "sent"
        assert say(flow, "finish") == "clean"

        agents.start(RS1)
        thread.wait(EventKind.UP, RS1)
        assert weights(kernel) == {RS1: 1, RS2: 1}
        assert set(clients.open(4)) == {RS1, RS2}
    finally:
        thread.close()
        if flow is not None:
            stop(flow)


DRAIN_TIMEOUT = 10.0


def test_a_live_flow_to_a_draining_real_server_completes_without_reset_then_the_server_is_deleted(
        rig: Any, ipvsadm: Any) -> None:
    topology, agents, kernel = rig
    clients = Clients(topology)
    thread = MonitorThread(Balancer(IPVSBackend(vips=[VIP])), CheckedService(
        service=service(DRAIN_PORT), check=TCPCheck(port=AGENT_PORT), policy=POLICY, action=Action.DRAIN,
        drain_timeout=DRAIN_TIMEOUT, drain_poll=0.2))
    flow = peer(topology.ns(CLIENT_NS), FLOW, CLIENTS[1], str(DRAIN_PORT))
    try:
        assert flow.stdout is not None
        draining = flow.stdout.readline().strip().split(":")[0]
        other = RS2 if draining == RS1 else RS1
        assert draining in (RS1, RS2), draining

        agents.stop(draining)
        down = thread.wait(EventKind.DOWN, draining)
        # Draining: weight 0, still in the service, because the kernel counts a live connection.
        for _ in range(5):  # over a second of the monitor's polls
            assert weights(kernel, DRAIN_PORT) == {draining: 0, other: 1}
            assert counts(kernel, draining, DRAIN_PORT) == (1, 0)
            assert say(flow, "send") == "sent"  # data keeps flowing to the draining server
            time.sleep(0.25)
        assert clients.open(10, DRAIN_PORT) == [other] * 10
        assert thread.events.empty(), thread.events.get()  # no drained event while the flow lives

        assert say(flow, "finish") == "clean"  # both FINs went through IPVS: no reset
        # The flow's entry now waits out TIME_WAIT (2 minutes in IPVS), which InActConn counts:
        # the drain ends at its timeout, and deletes the real server.
        assert counts(kernel, draining, DRAIN_PORT) == (0, 1)
        drained = thread.wait(EventKind.DRAINED, draining, limit=DRAIN_TIMEOUT + 30)
        assert drained.detail == "drain timeout, 1 connections left"
        assert drained.time - down.time >= DRAIN_TIMEOUT  # a busy machine can only make it later
        assert weights(kernel, DRAIN_PORT) == {other: 1}
        entries = [line.split() for line in ipvsadm("-Lnc").splitlines()
                   if f" {CLIENTS[1]}:" in line and f"{VIP}:{DRAIN_PORT}" in line]
        assert [(e[2], e[5].split(":")[0]) for e in entries] == [("TIME_WAIT", draining)], entries
    finally:
        thread.close()
        stop(flow)
