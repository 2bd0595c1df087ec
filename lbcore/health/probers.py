"""Probers: the clock, timers and probe outcomes a :class:`~lbcore.health.monitor.Monitor` runs on.

:class:`AsyncioProber` asks real servers over real sockets on an asyncio loop. :class:`SimProber`
asks a :class:`SimFleet` of simulated real servers on a :class:`~lbcore.clock.VirtualClock`, whose
failures a script schedules; time moves only in :meth:`SimProber.run_until`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import heapq
import os
import random
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import attrs

from lbcore._fields import as_address
from lbcore.clock import VirtualClock
from lbcore.errors import InvalidField
from lbcore.errors import ProbeFailed as ProbeFailed  # raised here; lbcore.health exports it
from lbcore.health import _dns, _icmp
from lbcore.health._regex import matcher
from lbcore.health.checks import (
    Check,
    DNSCheck,
    ExecCheck,
    FixedCheck,
    HealthState,
    HTTPCheck,
    PingCheck,
    Probe,
    SMTPCheck,
    TCPCheck,
    UDPCheck,
)
from lbcore.health.monitor import Done
from lbcore.model import IPAddress, format_endpoint

#: The most of a response an HTTP check reads; the status line and a health page fit well within.
HTTP_READ_LIMIT = 1 << 20


# -- asyncio ---------------------------------------------------------------------------------------


class LoopClock:
    """An asyncio loop's clock (time.monotonic() for the default loops), so timers and events agree.

    .. versionadded:: 0.1
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def now(self) -> float:
        """The loop's time."""
        return self._loop.time()


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.reply: asyncio.Future[bytes] = loop.create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # An ICMP port unreachable arrives here as ConnectionRefusedError.
        if not self.reply.done():
            self.reply.set_exception(exc)


class AsyncioProber:
    """Probes over real sockets on an asyncio loop, each bounded by its timeout.

    Args:
        loop: the loop to run on; the running loop by default.

    Raises:
        RuntimeError: no loop is given and none is running.

    .. versionadded:: 0.1
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self._clock = LoopClock(self.loop)
        self._tasks: set[asyncio.Task[None]] = set()
        self._dns_id = 0
        # A raw ICMP socket sees every echo reply of the host: a random identifier tells ours apart.
        self._icmp_id = random.getrandbits(16)
        self._icmp_seq = 0

    @property
    def clock(self) -> LoopClock:
        """The loop's clock."""
        return self._clock

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        """Run ``callback()`` at loop time ``when``."""
        return self.loop.call_at(when, callback)

    def probe(self, probe: Probe, done: Done) -> None:
        """Start one attempt as a task; ``done`` is called from it."""
        if isinstance(probe.check, FixedCheck):
            self.loop.call_soon(done, probe.check.state is HealthState.UP, f"fixed {probe.check.state}")
            return
        task = self.loop.create_task(self._run(probe, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """Cancel the attempts under way; their ``done`` is not called."""
        for task in list(self._tasks):
            task.cancel()

    async def _run(self, probe: Probe, done: Done) -> None:
        # The timeout cancels this task itself: wait_for would cost a second task per attempt.
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = self.loop.call_later(probe.timeout, expire)
        try:
            detail = await self._ask(probe)
            ok = True
        except asyncio.CancelledError:
            if not expired:
                raise  # close(): no outcome
            if hasattr(task, "uncancel"):  # 3.11+: the cancel was ours, and is handled
                task.uncancel()
            ok, detail = False, f"no answer within {probe.timeout} s"
        except Exception as exc:  # refused, reset, TLS (an OSError), a wrong answer: all say down
            # Whatever went wrong, done() must run, or this check would never be scheduled again.
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        finally:
            timer.cancel()
        done(ok, detail)

    def _ask(self, probe: Probe) -> Coroutine[Any, Any, str]:
        check: Check = probe.check
        address, port = probe.address, probe.port
        if isinstance(check, HTTPCheck):
            return self._http(check, address, port)
        if isinstance(check, UDPCheck):
            return self._udp_check(check, address, port)
        if isinstance(check, DNSCheck):
            return self._dns(check, address, port)
        if isinstance(check, SMTPCheck):
            return self._smtp(address, port)
        if isinstance(check, ExecCheck):
            return self._exec(check, address, port, probe.timeout)
        if isinstance(check, PingCheck):
            return self._ping(check, address)
        if isinstance(check, TCPCheck):
            return self._tcp(address, port)
        raise InvalidField("AsyncioProber", "check", check, "is not a check this prober runs")

    async def _tcp(self, address: IPAddress, port: int) -> str:
        # A bare socket, not a stream: a connect check reads nothing, and streams cost CPU per check.
        sock = socket.socket(socket.AF_INET6 if address.version == 6 else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await self.loop.sock_connect(sock, (str(address), port))
        finally:
            sock.close()
        return "connected"

    @staticmethod
    async def _http(check: HTTPCheck, address: IPAddress, port: int) -> str:
        context: ssl.SSLContext | None = None
        if check.https:
            context = ssl.create_default_context()
            if not check.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        server_name = check.sni or check.host
        reader, writer = await asyncio.open_connection(
            str(address), port, ssl=context, server_hostname=server_name if context is not None else None)
        try:
            host = check.host or format_endpoint(address, port)
            writer.write(f"{check.method} {check.path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n"
                         "User-Agent: lbcore-health\r\n\r\n".encode("latin-1"))
            data = b""
            while len(data) < HTTP_READ_LIMIT:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split()
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/") or not status_line[1].isdigit():
            raise ProbeFailed(f"not an HTTP response: {head[:40]!r}")
        status = int(status_line[1])
        if status not in check.status:
            raise ProbeFailed(f"status {status}, expected {sorted(check.status)}")
        if check.body is not None and matcher(check.body).search(body.decode("latin-1")) is None:
            raise ProbeFailed(f"status {status}, body does not match {check.body!r}")
        return f"status {status}"

    async def _udp(self, address: IPAddress, port: int, payload: bytes) -> bytes:
        transport, protocol = await self.loop.create_datagram_endpoint(
            lambda: _Reply(self.loop), remote_addr=(str(address), port))
        try:
            transport.sendto(payload)
            return await protocol.reply
        finally:
            transport.close()

    async def _udp_check(self, check: UDPCheck, address: IPAddress, port: int) -> str:
        reply = await self._udp(address, port, check.payload)
        if check.reply is not None and matcher(check.reply).search(reply) is None:
            raise ProbeFailed(f"reply {reply[:40]!r} does not match {check.reply!r}")
        return f"{len(reply)} bytes"

    async def _dns(self, check: DNSCheck, address: IPAddress, port: int) -> str:
        self._dns_id = (self._dns_id + 1) & 0xFFFF
        ident = self._dns_id
        count = _dns.answers(ident, await self._udp(address, port, _dns.query(ident, check.name, check.type)))
        if not count:
            raise ProbeFailed(f"no {check.type} answer for {check.name}")
        return f"{count} answers"

    @staticmethod
    async def _smtp(address: IPAddress, port: int) -> str:
        reader, writer = await asyncio.open_connection(str(address), port)
        try:
            banner = await reader.readline()
            if not banner.startswith(b"220"):
                raise ProbeFailed(f"banner {banner[:40]!r} is not 220")
            writer.write(b"QUIT\r\n")
        finally:
            writer.close()
        return banner.decode("latin-1").strip()

    async def _ping(self, check: PingCheck, address: IPAddress) -> str:
        version = address.version
        if version == 6:
            sock, kind = _icmp_socket(socket.AF_INET6, socket.IPPROTO_ICMPV6)
        else:
            sock, kind = _icmp_socket(socket.AF_INET, socket.IPPROTO_ICMP)
        self._icmp_seq = (self._icmp_seq + 1) & 0xFFFF
        seq = self._icmp_seq
        # The kernel sets the identifier of an unprivileged ICMP socket, and filters replies by it.
        ident = self._icmp_id if kind == "raw" else None
        payload = (seq.to_bytes(2, "big") * (check.size // 2 + 1))[:check.size]
        loop = self.loop
        outcome: asyncio.Future[tuple[str, int]] = loop.create_future()

        def readable() -> None:
            while not outcome.done():
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    return
                except OSError as exc:  # an ICMP error queued on an unprivileged socket
                    outcome.set_exception(exc)
                    return
                found = _icmp.answer(version, data, ident, seq, payload, ip_header=kind == "raw" and version == 4)
                if found is not None:
                    outcome.set_result(found)

        try:
            sock.setblocking(False)
            sock.connect((str(address), 0))  # the kernel then hands us only datagrams from the target
            loop.add_reader(sock.fileno(), readable)
            sent = loop.time()
            sock.send(_icmp.request(version, ident if ident is not None else 0, seq, payload))
            what, code = await outcome
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()
        if what != "reply":
            raise ProbeFailed(f"destination unreachable (ICMP code {code})")
        return f"echo reply in {(loop.time() - sent) * 1000:.1f} ms ({kind} socket)"

    @staticmethod
    async def _exec(check: ExecCheck, address: IPAddress, port: int, timeout: float) -> str:
        process = await asyncio.create_subprocess_exec(
            *check.arguments(address, port), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            status = await process.wait()
        finally:
            if process.returncode is None:  # timed out: do not leave it running
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await asyncio.shield(process.wait())
        if status != 0:
            raise ProbeFailed(f"exit status {status}")
        return "exit status 0"


def _icmp_socket(family: int, proto: int) -> tuple[socket.socket, str]:
    """An unprivileged ICMP socket if ``net.ipv4.ping_group_range`` allows our group, else a raw one.

    Raises:
        ProbeFailed: neither is allowed (no CAP_NET_RAW, and the group is outside the range).
    """
    try:
        return socket.socket(family, socket.SOCK_DGRAM, proto), "dgram"
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM):
            raise
    try:
        return socket.socket(family, socket.SOCK_RAW, proto), "raw"
    except PermissionError as exc:
        raise ProbeFailed(f"no ICMP socket: group {os.getgid()} is outside net.ipv4.ping_group_range "
                          "and raw sockets need CAP_NET_RAW") from exc


# -- simulation ------------------------------------------------------------------------------------


@attrs.frozen
class _Condition:
    up: bool
    refuse: bool
    latency: float


class SimFleet:
    """Simulated real servers: each answers every check unless the script says otherwise.

    A change ``at`` a time applies to the checks that start at that time or later. A change given
    without a port applies to every port of the address, unless a port has its own later change.

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        self._script: dict[tuple[IPAddress, int | None], list[tuple[float, int, _Condition]]] = {}
        self._seq = 0

    def _add(self, address: object, port: int | None, at: float, condition: _Condition) -> None:
        addr = as_address(address)
        if isinstance(addr, (str, int)):
            raise InvalidField("SimFleet", "address", address, "is not an IPv4 or IPv6 address")
        self._seq += 1
        entries = self._script.setdefault((addr, port), [])  # type: ignore[arg-type]
        entries.append((float(at), self._seq, condition))
        entries.sort()

    def fail(self, address: object, port: int | None = None, *, at: float, refuse: bool = False) -> None:
        """The server stops answering at ``at``: checks time out, or are refused at once with ``refuse``.

        Raises:
            InvalidField: ``address`` is not an address.
        """
        self._add(address, port, at, _Condition(False, refuse, self.condition(address, port, at).latency))

    def recover(self, address: object, port: int | None = None, *, at: float) -> None:
        """The server answers again from ``at``.

        Raises:
            InvalidField: ``address`` is not an address.
        """
        self._add(address, port, at, _Condition(True, False, self.condition(address, port, at).latency))

    def set_latency(self, address: object, seconds: float, port: int | None = None, *, at: float = 0.0) -> None:
        """The server answers after ``seconds`` from ``at`` on (a check fails if that reaches its timeout).

        Raises:
            InvalidField: ``address`` is not an address, or ``seconds`` is negative.
        """
        if seconds < 0:
            raise InvalidField("SimFleet", "seconds", seconds, "is negative")
        now = self.condition(address, port, at)
        self._add(address, port, at, _Condition(now.up, now.refuse, float(seconds)))

    def condition(self, address: object, port: int | None, when: float) -> _Condition:
        """How the server at ``address:port`` answers a check that starts at ``when``."""
        addr: Any = as_address(address)
        best: tuple[float, int, _Condition] | None = None
        for key in ((addr, None), (addr, port)):
            for entry in self._script.get(key, ()):
                if entry[0] <= when and (best is None or entry[:2] > best[:2]):
                    best = entry
        return best[2] if best is not None else _Condition(True, False, 0.0)


class _SimTimer:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class SimProber:
    """Probes of a :class:`SimFleet` on a virtual clock; time moves in :meth:`run_until`.

    Give a :class:`~lbcore.sim.SimBackend` the same clock, so connections and checks share one time.

    Args:
        clock: the virtual clock; a new one by default.
        fleet: the simulated real servers; a new one (every server up) by default.

    .. versionadded:: 0.1
    """

    def __init__(self, clock: VirtualClock | None = None, fleet: SimFleet | None = None) -> None:
        self._clock = clock if clock is not None else VirtualClock()
        self.fleet = fleet if fleet is not None else SimFleet()
        #: (time, address, port) of every attempt, in order.
        self.attempts: list[tuple[float, IPAddress, int]] = []
        self._heap: list[tuple[float, int, _SimTimer, Callable[[], None]]] = []
        self._seq = 0

    @property
    def clock(self) -> VirtualClock:
        """The virtual clock."""
        return self._clock

    def call_at(self, when: float, callback: Callable[[], None]) -> _SimTimer:
        """Run ``callback()`` once :meth:`run_until` reaches ``when``."""
        timer = _SimTimer()
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self._clock.now()), self._seq, timer, callback))
        return timer

    def probe(self, probe: Probe, done: Done) -> None:
        """Ask the fleet; the outcome arrives after the server's latency, or the timeout."""
        now = self._clock.now()
        if isinstance(probe.check, FixedCheck):
            state = probe.check.state
            self.call_at(now, lambda: done(state is HealthState.UP, f"fixed {state}"))
            return
        self.attempts.append((now, probe.address, probe.port))
        ping = isinstance(probe.check, PingCheck)
        # A ping asks the host: only the script's changes without a port apply to it.
        condition = self.fleet.condition(probe.address, None if ping else probe.port, now)
        timeout = probe.timeout
        if condition.up and condition.latency < timeout:
            self.call_at(now + condition.latency, lambda: done(True, "echo reply" if ping else "answered"))
        elif condition.refuse and condition.latency < timeout:
            self.call_at(now + condition.latency, lambda: done(False, "destination unreachable" if ping else "refused"))
        else:
            self.call_at(now + timeout, lambda: done(False, f"no answer within {timeout} s"))

    def run_until(self, when: float) -> None:
        """Fire every timer due by ``when`` in time order, moving the clock to each, then to ``when``.

        Raises:
            InvalidField: ``when`` is in the past.
        """
        if when < self._clock.now():
            raise InvalidField("SimProber", "when", when, f"is before now ({self._clock.now()})")
        heap = self._heap
        while heap and heap[0][0] <= when:
            due, _, timer, callback = heapq.heappop(heap)
            if timer.cancelled:
                continue
            self._clock.set(due)
            callback()
        self._clock.set(when)

    def advance(self, seconds: float) -> None:
        """Run for ``seconds`` of virtual time.

        Raises:
            InvalidField: ``seconds`` is negative.
        """
        if seconds < 0:
            raise InvalidField("SimProber", "seconds", seconds, "is negative")
        self.run_until(self._clock.now() + seconds)
