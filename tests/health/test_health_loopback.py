"""The monitor for real: asyncio probes against servers these tests start on 127.0.0.1.

Each server can "hang": it stops answering, as a stuck or unplugged server does, so that checks time
out, and the monitor takes it down after ``fall`` of them. These tests assert outcome and order, not
times (see _down_and_up.py): the times are the simulator's to prove, on the virtual clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from _down_and_up import POLICY, DownAndUp, assert_down_and_up, down_and_up, wait_for_count, wait_for_passes

from lbcore import Balancer, RealServer, SystemClock, VirtualService
from lbcore.health import (
    AsyncioProber,
    Check,
    CheckedService,
    DNSCheck,
    Event,
    ExecCheck,
    FixedCheck,
    HTTPCheck,
    Monitor,
    Policy,
    SimProber,
    SMTPCheck,
    TCPCheck,
    UDPCheck,
    probe_for,
)
from lbcore.sim import SimBackend

LOCAL = "127.0.0.1"
VIP = "192.0.2.50"  # the sim backend's service: no packet is sent to it


# -- servers ---------------------------------------------------------------------------------------


class Server:
    """A loopback server that answers until told to hang."""

    port: int

    def hang(self) -> None:
        raise NotImplementedError

    def serve(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class TCPServer(Server):
    """Accepts and closes. Hanging stops accepting and fills the accept queue: new SYNs are dropped."""

    BACKLOG = 1

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sock = socket.socket()
        self.sock.bind((LOCAL, 0))
        self.sock.listen(self.BACKLOG)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.fillers: list[socket.socket] = []
        self.serve()

    def _accept(self) -> None:
        try:
            while True:
                conn, _ = self.sock.accept()
                conn.close()
        except BlockingIOError:
            pass

    def hang(self) -> None:
        self.loop.remove_reader(self.sock)
        for _ in range(self.BACKLOG + 2):  # the queue holds backlog + 1; the rest wait in SYN_SENT
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex((LOCAL, self.port))
            self.fillers.append(filler)

    def serve(self) -> None:
        self.loop.add_reader(self.sock, self._accept)
        self._accept()

    def close(self) -> None:
        self.loop.remove_reader(self.sock)
        self.sock.close()
        for filler in self.fillers:
            filler.close()


class StreamServer(Server):
    """An asyncio stream server whose handler answers, or waits forever while hanging."""

    def __init__(self, answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> None:
        self.answer = answer
        self.hanging = False
        self.released = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, context: ssl.SSLContext | None = None) -> StreamServer:
        self.server = await asyncio.start_server(self._handle, LOCAL, 0, ssl=context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.hanging:
                # Hold the connection without a word until served again; a handler task that
                # ends cancelled makes asyncio 3.11's streams log an error, so the cancel is taken here.
                with contextlib.suppress(asyncio.CancelledError):
                    await self.released.wait()
                return
            await self.answer(reader, writer)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def hang(self) -> None:
        self.hanging = True
        self.released = asyncio.Event()

    def serve(self) -> None:
        self.hanging = False
        self.released.set()

    def close(self) -> None:
        assert self.server is not None
        self.released.set()
        self.server.close()


def http_answer(status: int = 200, body: bytes = b"ok\n") -> Callable[..., Awaitable[None]]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))
        await writer.drain()

    return answer


async def smtp_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 mail.test ESMTP\r\n")
    await writer.drain()
    await reader.readline()


class DatagramServer(Server, asyncio.DatagramProtocol):
    """A UDP server: echo, or a DNS responder; hanging drops every datagram."""

    def __init__(self, reply: Callable[[bytes], bytes | None]) -> None:
        self.reply = reply
        self.hanging = False
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    async def start(self) -> DatagramServer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(LOCAL, 0))
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def datagram_received(self, data: bytes, addr: Any) -> None:
        answer = None if self.hanging else self.reply(data)
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)

    def hang(self) -> None:
        self.hanging = True

    def serve(self) -> None:
        self.hanging = False

    def close(self) -> None:
        assert self.transport is not None
        self.transport.close()


def echo(data: bytes) -> bytes:
    return b"pong " + data


def dns_answer(query: bytes) -> bytes | None:
    """Answer an A query with 127.0.0.1; other types get NOERROR and no answer."""
    ident, _, qdcount = struct.unpack("!HHH", query[:6])
    end = query.index(b"\x00", 12) + 5  # the question: name, type, class
    qtype = struct.unpack("!H", query[end - 4:end - 2])[0]
    answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(LOCAL) if qtype == 1 else b""
    header = struct.pack("!HHHHHH", ident, 0x8180, qdcount, 1 if answers else 0, 0, 0)
    return header + query[12:end] + answers


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key, as PEM files.

    Made with the ``cryptography`` package when this Python has it, else with the openssl program.
    """
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.fail("an HTTPS test needs the cryptography package or the openssl program")
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key_path), "-out", str(cert_path), "-days", "1",
                        "-subj", "/CN=localhost", "-addext", f"subjectAltName=DNS:localhost,IP:{LOCAL}"],
                       check=True, capture_output=True, timeout=30)
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address(LOCAL))]), False)
            .sign(key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def tls_context(directory: Path, names: list[str]) -> ssl.SSLContext:
    """A server context with a self-signed certificate that records the SNI names it is sent."""
    cert_path, key_path = self_signed(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    context.sni_callback = lambda _sock, name, _ctx: names.append(str(name)) and None  # type: ignore[assignment, func-returns-value]
    return context


# -- the scenario ------------------------------------------------------------------------------------


async def stop_and_restart(server: Server, check: Check, protocol: str = "tcp") -> DownAndUp:
    """Hang the server just after a passed check; serve again once down."""
    service = VirtualService(protocol=protocol, address=VIP, port=80, scheduler="wlc",
                             real_servers=[RealServer(LOCAL, server.port, forward="nat", weight=3)])
    try:
        return await down_and_up(service, check, server.hang, server.serve)
    finally:
        server.close()


def assert_hung_then_served(run: DownAndUp) -> None:
    """Taken down by checks that timed out (a hung server answers nothing), and back."""
    assert_down_and_up(run)
    assert all(r.detail.startswith("no answer within") for r in run.to_down_results), run.to_down_results


def test_tcp_check_takes_a_hung_server_down_after_fall_timeouts_and_back() -> None:
    async def main() -> DownAndUp:
        return await stop_and_restart(TCPServer(asyncio.get_running_loop()), TCPCheck())

    assert_hung_then_served(asyncio.run(main()))


def test_http_check_takes_a_hung_server_down_and_back() -> None:
    async def main() -> DownAndUp:
        server = await StreamServer(http_answer()).start()
        return await stop_and_restart(server, HTTPCheck(path="/health", host="web.test", body="ok"))

    assert_hung_then_served(asyncio.run(main()))


def test_https_check_with_sni_takes_a_hung_server_down_and_back(tmp_path: Path) -> None:
    names: list[str] = []

    async def main() -> DownAndUp:
        server = await StreamServer(http_answer()).start(tls_context(tmp_path, names))
        return await stop_and_restart(server, HTTPCheck(https=True, sni="web.test"))

    assert_hung_then_served(asyncio.run(main()))
    assert set(names) == {"web.test"}


def test_udp_check_takes_a_silent_server_down_and_back() -> None:
    async def main() -> DownAndUp:
        server = await DatagramServer(echo).start()
        return await stop_and_restart(server, UDPCheck(payload=b"ping", reply=b"^pong ping$"), "udp")

    assert_hung_then_served(asyncio.run(main()))


def test_dns_check_takes_a_silent_resolver_down_and_back() -> None:
    async def main() -> DownAndUp:
        server = await DatagramServer(dns_answer).start()
        return await stop_and_restart(server, DNSCheck(name="web.test", type="A"), "udp")

    assert_hung_then_served(asyncio.run(main()))


def test_smtp_check_takes_a_silent_server_down_and_back() -> None:
    async def main() -> DownAndUp:
        server = await StreamServer(smtp_answer).start()
        return await stop_and_restart(server, SMTPCheck())

    assert_hung_then_served(asyncio.run(main()))


# -- single probes: what counts as up -----------------------------------------------------------------


async def ask(check: Check, port: int, timeout: float = 10.0) -> tuple[bool, str]:
    prober = AsyncioProber()
    outcome: asyncio.Future[tuple[bool, str]] = prober.loop.create_future()
    probe = probe_for(check, Policy(timeout=timeout), ipaddress.ip_address(LOCAL), port)
    prober.probe(probe, lambda ok, detail: outcome.set_result((ok, detail)))
    return await outcome


def test_http_check_wants_an_expected_status_and_a_matching_body() -> None:
    async def main() -> list[bool]:
        server = await StreamServer(http_answer(503, b"maintenance")).start()
        try:
            return [(await ask(check, server.port))[0] for check in (
                HTTPCheck(), HTTPCheck(status=[200, 503]), HTTPCheck(status=503, body="^maint"),
                HTTPCheck(status=503, body="healthy"))]
        finally:
            server.close()

    assert asyncio.run(main()) == [False, True, True, False]


def test_https_check_with_verify_refuses_a_self_signed_certificate(tmp_path: Path) -> None:
    async def main() -> list[tuple[bool, str]]:
        server = await StreamServer(http_answer()).start(tls_context(tmp_path, []))
        try:
            return [await ask(HTTPCheck(https=True, verify=verify), server.port) for verify in (False, True)]
        finally:
            server.close()

    (ok_off, _), (ok_on, detail) = asyncio.run(main())
    assert ok_off and not ok_on and "CERTIFICATE_VERIFY_FAILED" in detail


def test_refused_connection_and_port_unreachable_fail_at_once() -> None:
    sock = socket.socket()
    sock.bind((LOCAL, 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now

    async def main() -> list[tuple[bool, str]]:
        return [await ask(check, port) for check in (TCPCheck(), UDPCheck(), SMTPCheck())]

    outcomes = asyncio.run(main())
    assert [ok for ok, _ in outcomes] == [False, False, False]
    assert all("ConnectionRefused" in detail for _, detail in outcomes)


def test_exec_check_uses_the_exit_status_and_kills_on_timeout() -> None:
    async def main() -> list[tuple[bool, str]]:
        return [await ask(ExecCheck(command=["sh", "-c", "exit 0", "{address}"]), 80),
                await ask(ExecCheck(command=["sh", "-c", 'test "$0:$1" = "127.0.0.1:80"', "{address}", "{port}"]), 80),
                await ask(ExecCheck(command=["false"]), 80),
                await ask(ExecCheck(command=["sleep", "5"]), 80, timeout=0.2)]

    outcomes = asyncio.run(main())
    assert [ok for ok, _ in outcomes] == [True, True, False, False]
    assert "exit status 1" in outcomes[2][1] and "no answer" in outcomes[3][1]


# -- the same scenario in the simulator and for real --------------------------------------------------

# (seconds from start, server index, "fail" or "recover"). In the simulator the steps happen at these
# times; for real, each step waits until the events the simulator saw before it have happened, so
# the comparison holds however slowly the machine runs.
SCRIPT = [(0.35, 0, "fail"), (2.35, 1, "fail"), (4.35, 0, "recover")]
END = 6.0


def comparison_config(ports: list[int]) -> CheckedService:
    service = VirtualService(protocol="tcp", address=VIP, port=80, scheduler="wlc",
                             real_servers=[RealServer(LOCAL, p, forward="nat") for p in ports])
    return CheckedService(service=service, check=TCPCheck(), policy=POLICY, action="remove",
                          fallback=RealServer("127.0.0.2", 80, forward="nat"))


def summary(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(e.kind.value, None if e.address is None else f"{e.address}:{e.port}") for e in events]


def run_in_simulator(ports: list[int]) -> list[Event]:
    prober = SimProber()
    for at, index, action in SCRIPT:
        getattr(prober.fleet, action)(LOCAL, ports[index], at=at)
    monitor = Monitor(Balancer(SimBackend(clock=prober.clock)), [comparison_config(ports)], prober)
    monitor.start()
    prober.run_until(END)
    return monitor.events


def run_both() -> tuple[list[int], list[Event], list[Event]]:
    """The script in the simulator, then for real: its steps in order, each once the simulator's
    events before it have happened.

    Returns:
        The two servers' ports, the simulated events and the real ones.
    """
    async def main() -> tuple[list[int], list[Event], list[Event]]:
        loop = asyncio.get_running_loop()
        servers = [TCPServer(loop), TCPServer(loop)]
        ports = [server.port for server in servers]
        simulated = run_in_simulator(ports)
        prober = AsyncioProber()
        monitor = Monitor(Balancer(SimBackend(clock=SystemClock())), [comparison_config(ports)], prober)
        stream = monitor.queue()
        monitor.start()
        try:
            await wait_for_passes(monitor, 2 * len(servers))  # as in the simulator: both answer first
            for at, index, action in SCRIPT:
                await wait_for_count(monitor, sum(1 for e in simulated if e.time < at))
                server = servers[index]
                server.hang() if action == "fail" else server.serve()
            await wait_for_count(monitor, len(simulated))
            await asyncio.sleep(POLICY.interval * 3)  # room for an event the simulator did not see
        finally:
            monitor.stop()
            prober.close()
            for server in servers:
                server.close()
        streamed = [stream.get_nowait() for _ in range(stream.qsize())]
        assert streamed == monitor.events
        return ports, simulated, monitor.events

    return asyncio.run(main())


def test_the_same_scenario_gives_the_same_events_in_the_simulator_and_for_real() -> None:
    ports, simulated, real = run_both()
    a, b = f"{LOCAL}:{ports[0]}", f"{LOCAL}:{ports[1]}"
    assert summary(simulated) == [("down", a), ("down", b), ("quorum_down", None), ("fallback_on", "127.0.0.2:80"),
                                  ("up", a), ("quorum_up", None), ("fallback_off", "127.0.0.2:80")]
    assert summary(real) == summary(simulated)


def test_fixed_check_answers_without_asking_anyone() -> None:
    async def main() -> list[tuple[bool, str]]:
        return [await ask(FixedCheck(), 9), await ask(FixedCheck(state="down"), 9)]

    assert asyncio.run(main()) == [(True, "fixed up"), (False, "fixed down")]


def test_checks_reach_ipv6_loopback_servers() -> None:
    async def main() -> list[bool]:
        server = await asyncio.start_server(lambda r, w: w.close(), "::1", 0)
        port = server.sockets[0].getsockname()[1]
        prober = AsyncioProber()
        outcome: asyncio.Future[tuple[bool, str]] = prober.loop.create_future()
        prober.probe(probe_for(TCPCheck(), Policy(timeout=10.0), ipaddress.ip_address("::1"), port),
                     lambda ok, detail: outcome.set_result((ok, detail)))
        try:
            return [(await outcome)[0]]
        finally:
            server.close()

    assert asyncio.run(main()) == [True]
