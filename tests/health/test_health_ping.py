"""The ICMP ping check for real: loopback, and a host in a network namespace these tests create.

Two namespaces are joined by a veth pair: "probe" (10.254.0.1/30), where the monitor's asyncio loop
runs (its thread joins the namespace with setns(2), which moves only that thread), and "target"
(10.254.0.2/30), the pinged host. The target fails in two ways: it ignores echo requests
(``icmp_echo_ignore_all``: a hung host), or its link goes down (an unplugged cable). No packet leaves
the two namespaces.
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import attrs
import pytest
from _down_and_up import (
    POLICY,
    DownAndUp,
    assert_down_and_up,
    down_and_up,
    wait_for,
    wait_for_count,
    wait_for_passes,
)

from lbcore import Balancer, InvalidField, RealServer, SystemClock, VirtualService
from lbcore.health import (
    AsyncioProber,
    CheckedService,
    Event,
    EventKind,
    Monitor,
    PingCheck,
    Policy,
    SimProber,
    probe_for,
)
from lbcore.health._icmp import answer, checksum, request
from lbcore.sim import SimBackend

T = TypeVar("T")
VIP = "192.0.2.60"  # the sim backend's service: no packet is sent to it
PROBE_SIDE, TARGET = "10.254.0.1", "10.254.0.2"
CLONE_NEWNET = 0x40000000


def ip(*argv: str) -> None:
    """Run ``ip``; the test fails when it is missing or exits non-zero."""
    if shutil.which("ip") is None:
        pytest.fail("ip not found: install Debian's 'iproute2' package", pytrace=False)
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        pytest.fail(f"ip {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}", pytrace=False)


@attrs.define
class Pair:
    """The probe and target namespaces; ``cut()`` and ``mend()`` take the target's link down and up."""

    probe: str
    target: str

    def cut(self) -> None:
        ip("-n", self.target, "link", "set", "eth0", "down")

    def mend(self) -> None:
        ip("-n", self.target, "link", "set", "eth0", "up")

    def silence(self) -> None:
        """The target stays up but ignores echo requests, as a hung host's network stack does."""
        ip("netns", "exec", self.target, "sysctl", "-q", "-w", "net.ipv4.icmp_echo_ignore_all=1")

    def unsilence(self) -> None:
        ip("netns", "exec", self.target, "sysctl", "-q", "-w", "net.ipv4.icmp_echo_ignore_all=0")

    def delete_target(self) -> None:
        ip("netns", "del", self.target)  # its end of the veth goes with it, and so does ours

    def allow_unprivileged_ping(self) -> None:
        """Let every group open ICMP sockets in the probe namespace (the default range, "1 0", is empty)."""
        ip("netns", "exec", self.probe, "sysctl", "-q", "-w", "net.ipv4.ping_group_range=0 2147483647")

    def run(self, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``asyncio.run(main())`` in a thread that has joined the probe namespace."""
        outcome: list[Any] = []

        def body() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/run/netns/{self.probe}", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns {self.probe}: {os.strerror(err)}")
                finally:
                    os.close(fd)
                outcome.append(asyncio.run(main()))
            except BaseException as exc:  # handed to the test's thread
                outcome.append(exc)

        thread = threading.Thread(target=body)
        thread.start()
        thread.join()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]  # type: ignore[no-any-return]


@pytest.fixture
def pair() -> Iterator[Pair]:
    """Two fresh namespaces joined by a veth pair; both are deleted afterwards."""
    made = Pair(f"lbping{os.getpid()}p", f"lbping{os.getpid()}t")
    created: list[str] = []
    try:
        for name in (made.probe, made.target):
            ip("netns", "add", name)
            created.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        # Made inside the namespaces: nothing appears, even for a moment, in this machine's own.
        ip("-n", made.probe, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", made.target)
        for name, address in ((made.probe, PROBE_SIDE), (made.target, TARGET)):
            ip("-n", name, "addr", "add", f"{address}/30", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
        # A static neighbour entry: a link that comes back answers the next ping, rather than after
        # ARP's retransmission timer (up to a second) finds the target again. ARP is not under test.
        mac = subprocess.run(["ip", "-n", made.target, "-br", "link", "show", "eth0"], capture_output=True,
                             text=True, check=True).stdout.split()[2]
        ip("-n", made.probe, "neigh", "replace", TARGET, "lladdr", mac, "dev", "eth0", "nud", "permanent")
        yield made
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


async def ask(check: PingCheck, address: str, timeout: float = 10.0) -> tuple[bool, str]:
    prober = AsyncioProber()
    outcome: asyncio.Future[tuple[bool, str]] = prober.loop.create_future()
    prober.probe(probe_for(check, Policy(timeout=timeout), ipaddress.ip_address(address), 80),
                 lambda ok, detail: outcome.set_result((ok, detail)))
    return await outcome


def service(*addresses: str) -> VirtualService:
    return VirtualService(protocol="tcp", address=VIP, port=80, scheduler="wlc",
                          real_servers=[RealServer(a, 80, forward="nat", weight=3) for a in addresses])


# -- the wire format -----------------------------------------------------------------------------


def test_echo_request_carries_a_valid_checksum_and_its_reply_is_recognised() -> None:
    message = request(4, 0x1234, 7, b"abcd")
    assert message[:2] == b"\x08\x00" and message[4:8] == b"\x12\x34\x00\x07"
    assert checksum(message) == 0  # a message with its checksum in place sums to zero
    reply = b"\x00\x00" + message[2:]
    ipv4_header = bytes([0x45]) + bytes(19)
    assert answer(4, ipv4_header + reply, 0x1234, 7, b"abcd", ip_header=True) == ("reply", 0)
    assert answer(4, reply, None, 7, b"abcd", ip_header=False) == ("reply", 0)  # kernel-set identifier
    assert answer(4, reply, 0x4321, 7, b"abcd", ip_header=False) is None  # another pinger's
    assert answer(4, reply, 0x1234, 8, b"abcd", ip_header=False) is None  # another sequence
    assert answer(4, reply, 0x1234, 7, b"abce", ip_header=False) is None  # mangled data
    assert answer(4, message, 0x1234, 7, b"abcd", ip_header=False) is None  # our own request, looped back
    unreachable = b"\x03\x01\x00\x00\x00\x00\x00\x00" + ipv4_header + message[:8]
    assert answer(4, unreachable, 0x1234, 7, b"abcd", ip_header=False) == ("unreachable", 1)
    assert request(6, 1, 2, b"")[:2] == b"\x80\x00"


@pytest.mark.parametrize("make, field", [
    (lambda: PingCheck(port=80), "port"),
    (lambda: PingCheck(size=-1), "size"),
    (lambda: PingCheck(size=70000), "size"),
    (lambda: PingCheck(size="56"), "size"),
])
def test_ping_check_refuses_a_port_and_a_bad_size_naming_class_and_field(
        make: Callable[[], PingCheck], field: str) -> None:
    with pytest.raises(InvalidField) as info:
        make()
    assert (info.value.owner, info.value.field) == ("PingCheck", field)


def test_a_ping_probe_has_port_0_so_services_on_other_ports_share_it() -> None:
    rs = ipaddress.ip_address("198.51.100.1")
    assert probe_for(PingCheck(), POLICY, rs, 80) == probe_for(PingCheck(), POLICY, rs, 443)
    assert probe_for(PingCheck(), POLICY, rs, 0).port == 0  # a fwmark service's real server
    other = probe_for(PingCheck(address="198.51.100.7"), POLICY, rs, 80)
    assert str(other.address) == "198.51.100.7"


# -- real pings ----------------------------------------------------------------------------------


def test_ping_check_gets_echo_replies_from_loopback_addresses() -> None:
    async def main() -> list[tuple[bool, str]]:
        return [await ask(PingCheck(), "127.0.0.1"), await ask(PingCheck(size=0), "127.0.0.1"),
                await ask(PingCheck(size=1400), "::1")]

    outcomes = asyncio.run(main())
    assert [ok for ok, _ in outcomes] == [True, True, True], outcomes
    assert all(detail.startswith("echo reply in ") for _, detail in outcomes)


def ping_down_and_up(pair: Pair, fail: Callable[[], None], restore: Callable[[], None]) -> DownAndUp:
    """Make the target fail just after a passed ping; restore it once down."""

    async def main() -> DownAndUp:
        return await down_and_up(service(TARGET), PingCheck(), fail, restore)

    return pair.run(main)


@pytest.mark.netns
@pytest.mark.parametrize("kind", ["raw", "dgram"])
def test_ping_check_takes_a_silent_host_down_after_fall_timeouts_and_back(pair: Pair, kind: str) -> None:
    if kind == "dgram":
        pair.allow_unprivileged_ping()
    run = ping_down_and_up(pair, pair.silence, pair.unsilence)
    assert_down_and_up(run)
    assert all(r.detail.startswith("no answer within") for r in run.to_down_results), run.to_down_results
    assert run.passed and all(detail.endswith(f"({kind} socket)") for detail in run.passed), run.passed


@pytest.mark.netns
@pytest.mark.parametrize("kind", ["raw", "dgram"])
def test_ping_check_takes_an_unplugged_host_down_and_back(pair: Pair, kind: str) -> None:
    if kind == "dgram":
        pair.allow_unprivileged_ping()
    # Each ping times out, unless the kernel has by then seen the carrier go (its link watch runs up
    # to a second late) and an unprivileged socket's send fails at once (ENOBUFS): then a failure
    # comes without its timeout.
    assert_down_and_up(ping_down_and_up(pair, pair.cut, pair.mend), timeouts=kind == "raw")


@pytest.mark.netns
def test_ping_check_takes_a_host_down_when_its_namespace_is_deleted(pair: Pair) -> None:
    async def main() -> tuple[list[tuple[str, str]], list[str]]:
        prober = AsyncioProber()
        sim = SimBackend(clock=SystemClock())
        vs = service(TARGET, "127.0.0.1")  # the probe namespace's own loopback stays up
        monitor = Monitor(Balancer(sim), [CheckedService(service=vs, check=PingCheck(), policy=POLICY,
                                                         action="remove")], prober)
        monitor.start()
        try:
            await wait_for_passes(monitor, 4)  # both addresses answer, twice
            assert monitor.events == []
            pair.delete_target()
            await wait_for(monitor, EventKind.DOWN, 0)
            await asyncio.sleep(POLICY.interval * 3)  # room for an event that should not come
        finally:
            monitor.stop()
            prober.close()
        held = sim.read().get(vs.key)
        assert held is not None
        return [(e.kind.value, str(e.address)) for e in monitor.events], [str(rs.address) for rs in held.real_servers]

    events, left = pair.run(main)
    assert events == [("down", TARGET)]
    assert left == ["127.0.0.1"]


# (seconds from start, "cut" or "mend"). In the simulator the steps happen at these times; for real,
# each waits until the events the simulator saw before it have happened, so the comparison holds
# however slowly the machine runs.
SCRIPT = [(0.35, "cut"), (2.35, "mend")]
END = 3.5


def timeline(events: list[Event], start: float) -> list[tuple[str, str, float]]:
    return [(e.kind.value, str(e.address), e.time - start) for e in events]


@pytest.mark.netns
def test_the_same_ping_scenario_gives_the_same_events_in_the_simulator_and_for_real(pair: Pair) -> None:
    def config() -> CheckedService:
        return CheckedService(service=service(TARGET, "127.0.0.1"), check=PingCheck(), policy=POLICY)

    prober = SimProber()
    prober.fleet.fail(TARGET, at=SCRIPT[0][0])
    prober.fleet.recover(TARGET, at=SCRIPT[1][0])
    simulated = Monitor(Balancer(SimBackend(clock=prober.clock)), [config()], prober)
    simulated.start()
    prober.run_until(END)

    async def main() -> list[Event]:
        real_prober = AsyncioProber()
        monitor = Monitor(Balancer(SimBackend(clock=SystemClock())), [config()], real_prober)
        monitor.start()
        try:
            await wait_for_passes(monitor, 2)  # as in the simulator: the target answers first
            for at, action in SCRIPT:
                await wait_for_count(monitor, sum(1 for e in simulated.events if e.time < at))
                getattr(pair, action)()
            await wait_for_count(monitor, len(simulated.events))
            await asyncio.sleep(POLICY.interval * 3)  # room for an event the simulator did not see
        finally:
            monitor.stop()
            real_prober.close()
        return monitor.events

    real = pair.run(main)
    # down when the pings of 0.4 and 0.9 have timed out; up when those of 2.4 and 2.5 answer
    simulated_timeline = timeline(simulated.events, 0.0)
    assert simulated_timeline == [("down", TARGET, pytest.approx(1.4)), ("up", TARGET, pytest.approx(2.5))]
    assert [e[:2] for e in timeline(real, 0.0)] == [e[:2] for e in simulated_timeline]
