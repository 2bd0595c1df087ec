"""The IPVS backend against the real kernel: the conformance suite, ownership, undo, no-op applies."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import pytest
from lbcore_ipvs import IPVSBackend

from lbcore import (
    BackendError,
    Balancer,
    DeleteService,
    Persistence,
    RealServer,
    ServiceExists,
    StateUnknown,
    Timeouts,
    Unsupported,
    VirtualService,
)
from lbcore.backend import Backend
from lbcore.errors import NotOwned
from lbcore.testing.conformance import RIPS, VIP, VIP6, BackendConformance, web

pytestmark = pytest.mark.kernel

# Services another tool owns; every test checks they are untouched.
FOREIGN = [
    "-A -t 203.0.113.1:80 -s rr",
    "-a -t 203.0.113.1:80 -r 198.51.100.50:80 -m -w 3",
    "-A -u 203.0.113.2:5353 -s sh",
    "-A -f 99 -s wlc -p 60",
]


def ipvsadm(*args: str) -> str:
    return subprocess.run(["ipvsadm", *args], capture_output=True, text=True, check=True).stdout


def sh(command: str) -> None:
    subprocess.run(command, shell=True, check=True, capture_output=True)


@pytest.fixture
def links() -> Iterator[None]:
    """Routes to the real servers' networks: the kernel refuses a real server it cannot route."""
    sh("ip link add lbtest0 type dummy && ip link set lbtest0 up"
       " && ip addr add 198.51.100.254/24 dev lbtest0 && ip -6 addr add 2001:db8::fffe/64 dev lbtest0 nodad")
    yield
    sh("ip link del lbtest0")


@pytest.fixture
def foreign(links: None) -> Iterator[None]:
    """Another tool's services, present in every test and checked unchanged afterwards."""
    ipvsadm("-C")
    for line in FOREIGN:
        ipvsadm(*line.split())
    before = ipvsadm("-Sn")
    yield
    after = ipvsadm("-Sn").splitlines()
    assert [line for line in after if "203.0.113." in line or "-f 99 " in line] == before.splitlines(), after
    ipvsadm("-C")


def open_ipvs() -> IPVSBackend:
    return IPVSBackend(vips=[VIP, VIP6], fwmarks=[1])


class TestIPVS(BackendConformance):
    property_examples = 10  # each example is a few netlink round trips in user-mode Linux

    @pytest.fixture
    def backend(self, foreign: None) -> Iterator[IPVSBackend]:
        opened = open_ipvs()
        yield opened
        opened.close()

    @pytest.fixture
    def fault(self) -> Callable[[Backend, int], Any]:
        return ipvs_fault


@attrs.define
class Injected:
    fired: bool = False


@contextmanager
def ipvs_fault(backend: Backend, at: int) -> Iterator[Injected]:
    """The kernel refuses (EIO) the backend's netlink change number ``at`` of the next apply;
    the changes before it and after it in the same batch are sent, as a real refusal leaves them."""
    assert isinstance(backend, IPVSBackend)
    injected = Injected()
    real = backend._send_batch
    sent = 0

    def send_batch(requests: list[tuple[int, Any]]) -> list[int]:
        nonlocal sent
        codes = []
        for request in requests:
            if sent == at and not injected.fired:
                injected.fired = True
                codes.append(errno.EIO)
            else:
                codes.extend(real([request]))
            sent += 1
        return codes

    backend._send_batch = send_batch  # type: ignore[method-assign]
    try:
        yield injected
    finally:
        del backend._send_batch


def test_read_ignores_services_it_does_not_own(foreign: None) -> None:
    backend = open_ipvs()
    Balancer(backend).add_service(web())
    assert [s.key for s in backend.read()] == [web().key]
    assert "203.0.113.1:80" in ipvsadm("-Sn")


def test_an_op_on_a_foreign_service_is_refused_before_anything_is_sent(foreign: None) -> None:
    backend = open_ipvs()
    foreign_svc = VirtualService(protocol="tcp", address="203.0.113.1", port=80, scheduler="rr")
    with pytest.raises(NotOwned):
        backend.apply([DeleteService(foreign_svc.key)])
    assert backend.socket.mutations == 0


def test_reapplying_an_unchanged_config_sends_no_mutating_message(foreign: None) -> None:
    backend = open_ipvs()
    lb = Balancer(backend)
    desired = [web(persistence=Persistence(timeout=300, netmask="255.255.255.0")),
               VirtualService(fwmark=1, scheduler="mh", flags=["mh-port"], real_servers=[RealServer(RIPS[0], 0)])]
    lb.apply(desired)
    sent = backend.socket.mutations
    assert lb.apply(desired) == []
    assert backend.socket.mutations == sent


class FailAt(IPVSBackend):
    """Fails the request numbered ``fail_at`` (0-based, over the backend's life) with EIO."""

    def __init__(self, fail_at: int, fail_undo: bool = False) -> None:
        super().__init__(vips=[VIP, VIP6], fwmarks=[1])
        self.fail_at = fail_at
        self.fail_undo = fail_undo
        self.sent = 0

    def _send_batch(self, requests: list[tuple[int, Any]]) -> list[int]:
        codes = []
        for request in requests:
            if self.sent == self.fail_at or (self.fail_undo and self.sent > self.fail_at):
                codes.append(errno.EIO)
            else:
                codes.extend(super()._send_batch([request]))
            self.sent += 1
        return codes


def test_an_injected_failure_of_any_op_leaves_the_kernel_as_it_was(foreign: None) -> None:
    lb = Balancer(open_ipvs())
    lb.apply([web("wlc")])  # rr below: the plan edits the service too
    desired = [web(scheduler="rr", real_servers=[RealServer(RIPS[0], 80, forward="nat", weight=4),
                                                 RealServer("198.51.100.9", 8080, forward="nat")]),
               VirtualService(protocol="udp", address=VIP, port=53, real_servers=[RealServer(RIPS[1], 53)])]
    ops = lb.plan(desired)
    assert len(ops) >= 6
    before = ipvsadm("-Sn")
    for k in range(len(ops)):
        with pytest.raises(BackendError):
            Balancer(FailAt(k)).apply(desired)
        assert ipvsadm("-Sn") == before, f"failure of op {k}"
    assert Balancer(open_ipvs()).apply(desired) == ops  # the next apply converges
    assert Balancer(open_ipvs()).plan(desired) == []


def test_a_failed_undo_raises_state_unknown_listing_what_is_in_effect(foreign: None) -> None:
    lb = Balancer(open_ipvs())
    desired = [web()]
    ops = lb.plan(desired)
    with pytest.raises(StateUnknown) as error:
        Balancer(FailAt(2, fail_undo=True)).apply(desired)
    assert error.value.applied == ops[:2]
    assert Balancer(open_ipvs()).read().services[web().key].real_servers == (ops[1].real_server,)  # type: ignore[union-attr]
    Balancer(open_ipvs()).apply(desired)
    assert Balancer(open_ipvs()).plan(desired) == []


class RacedBy(IPVSBackend):
    """Another program adds the VIP's service between lbcore's read and its first request."""

    def _send_batch(self, requests: list[tuple[int, Any]]) -> list[int]:
        if not self.socket.mutations:
            ipvsadm("-A", "-t", f"{VIP}:80", "-s", "wlc")
        return super()._send_batch(requests)


def test_a_change_by_another_program_is_mapped_by_errno_to_the_typed_error(foreign: None) -> None:
    backend = RacedBy(vips=[VIP], fwmarks=[])
    with pytest.raises(ServiceExists) as error:
        Balancer(backend).apply([web()])
    assert isinstance(error.value.__cause__, OSError) and error.value.__cause__.errno == errno.EEXIST
    assert ipvsadm("-Sn").count(f"{VIP}:80") == 1  # the other program's service, and only it


def test_a_scheduler_module_the_kernel_lacks_is_unsupported(foreign: None) -> None:
    subprocess.run(["rmmod", "ip_vs_twos"], capture_output=True, check=False)
    try:
        with pytest.raises(Unsupported):
            Balancer(open_ipvs()).add_service(web("twos"))
    finally:
        subprocess.run(["sh", "-c", "insmod $(find /usr/lib/uml/modules -name ip_vs_twos.ko*)"],
                       capture_output=True, check=False)


def test_ipv6_service_with_a_prefix_reads_back_and_saves_as_ipvsadm_does(foreign: None) -> None:
    svc = VirtualService(protocol="tcp", address=VIP6, port=443, scheduler="wrr",
                         persistence=Persistence(timeout=120, netmask=64),
                         real_servers=[RealServer("2001:db8::1:1", 443, weight=2)])
    Balancer(open_ipvs()).add_service(svc)
    assert list(open_ipvs().read()) == [svc]
    assert f"-A -t [{VIP6}]:443 -s wrr -p 120 -M 64" in ipvsadm("-Sn")


def test_timeouts_round_trip_through_the_kernel(foreign: None) -> None:
    lb = Balancer(open_ipvs())
    before = lb.read().timeouts
    lb.set_timeouts(Timeouts(tcp=600, tcpfin=30, udp=90))
    try:
        assert "Timeout (tcp tcpfin udp): 600 30 90" in ipvsadm("-L", "--timeout")
    finally:
        assert before is not None
        lb.set_timeouts(before)


def test_sync_daemon_starts_and_stops(foreign: None) -> None:
    backend = open_ipvs()
    backend.start_daemon("master", "lbtest0", syncid=7)
    try:
        assert backend.daemons() == [{"state": "master", "interface": "lbtest0", "syncid": 7}]
        assert "master sync daemon (mcast=lbtest0, syncid=7" in ipvsadm("-L", "--daemon")
    finally:
        backend.stop_daemon("master")
    assert backend.daemons() == []


def test_zero_clears_the_counters_of_an_owned_service(foreign: None) -> None:
    backend = open_ipvs()
    Balancer(backend).add_service(web())
    backend.zero(web())
    stats = backend.stats()[web().key]
    assert stats["stats"]["conns"] == 0
    assert set(stats["real_servers"]) == {rs.key for rs in web().real_servers}
