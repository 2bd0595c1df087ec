"""The iptables backend against this machine's real netfilter, with real TCP between namespaces.

Every test runs in namespaces it makes (_harness.netns.Lab), with an operator's own rules
in the director's tables before lbcore starts; each test ends by checking those are untouched.
"""

from __future__ import annotations

import collections
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _harness.netns import Lab
from lbcore_iptables import IPTablesBackend

from lbcore import BackendError, BackendUnavailable, Balancer, Persistence, RealServer, Unsupported, VirtualService
from lbcore.rules import AutoNat, FirewallMark, LoopbackVIP, PolicyRoute, Redirect
from lbcore.table import Table

pytestmark = pytest.mark.netns

VIP = "10.90.0.100"
PORT = 80
FOREIGN = [
    ("nat", "-A PREROUTING -p tcp -m tcp --dport 2222 -m comment --comment operator -j ACCEPT"),
    ("nat", "-A POSTROUTING -o lo -j ACCEPT"),
    ("mangle", "-A PREROUTING -p udp -m udp --dport 5353 -j MARK --set-xmark 0x7/0xffffffff"),
    ("filter", "-A INPUT -p tcp -m tcp --dport 2222 -j ACCEPT"),
]


def _foreign(lab: Lab, ns: str) -> dict[str, list[str]]:
    """What the operator owns in ``ns``: every line of iptables-legacy-save that is not lbcore's."""
    return {t: [line for line in lab.save(ns, t) if "LBCORE" not in line] for t in ("nat", "mangle", "filter")}


@pytest.fixture
def lab() -> Iterator[Lab]:
    """client --- director --- rs1, rs2, rs3 (NAT: the real servers route back via the director)."""
    with Lab("client", "dir", "rs1", "rs2", "rs3") as lab:
        lab.link("client", "10.90.0.2/24", "dir", "10.90.0.1/24")
        lab.run("dir", "ip", "addr", "add", f"{VIP}/32", "dev", "lo")
        lab.run("client", "ip", "route", "add", "default", "via", "10.90.0.1")
        for i in (1, 2, 3):
            lab.link("dir", f"10.91.{i}.1/24", f"rs{i}", f"10.91.{i}.2/24")
            lab.run(f"rs{i}", "ip", "route", "add", "default", "via", f"10.91.{i}.1")
            lab.server(f"rs{i}", f"rs{i}", PORT)
        lab.sysctl("dir", "net.ipv4.ip_forward", "1")
        for table, rule in FOREIGN:
            lab.run("dir", "iptables-legacy", "-t", table, *rule.split())
        lab.run("dir", "iptables-legacy", "-t", "nat", "-N", "OPERATOR")
        foreign = _foreign(lab, "dir")
        yield lab
        assert _foreign(lab, "dir") == foreign, "lbcore changed rules it does not own"


@pytest.fixture
def backend(lab: Lab) -> Iterator[IPTablesBackend]:
    with lab.inside("dir"):
        opened = IPTablesBackend(legacy_beside_nft=True, weighted="random")
        try:
            yield opened
        finally:
            opened.close()


def _service(scheduler: str = "rr", weights: tuple[int, ...] = (1, 1, 1), **kwargs: object) -> VirtualService:
    return VirtualService("tcp", VIP, PORT, scheduler=scheduler, real_servers=[
        RealServer(f"10.91.{i}.2", PORT, forward="nat", weight=w) for i, w in enumerate(weights, 1)], **kwargs)


def _answers(lab: Lab, count: int, source: str | None = None) -> list[str | None]:
    return [lab.ask("client", VIP, PORT, source=source) for _ in range(count)]


def test_an_nf_tables_host_is_refused_with_the_override_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "iptables").symlink_to("/usr/sbin/xtables-nft-multi")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("LBCORE_IPTABLES_LEGACY", raising=False)
    with pytest.raises(BackendUnavailable) as refused:
        IPTablesBackend()
    assert "nf_tables" in str(refused.value) and "legacy_beside_nft=True" in str(refused.value)


def test_a_legacy_host_is_accepted(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "iptables").symlink_to("/usr/sbin/xtables-legacy-multi")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with lab.inside("dir"):
        IPTablesBackend().close()


def test_round_robin_takes_the_real_servers_in_turn(lab: Lab, backend: IPTablesBackend) -> None:
    Balancer(backend).apply([_service()])
    assert _answers(lab, 9) == ["rs1", "rs2", "rs3"] * 3


def test_a_quiesced_real_server_gets_no_new_connections(lab: Lab, backend: IPTablesBackend) -> None:
    Balancer(backend).apply([_service(weights=(1, 0, 1))])
    assert _answers(lab, 6) == ["rs1", "rs3"] * 3


def test_weighted_random_gives_each_real_server_its_weights_share(lab: Lab, backend: IPTablesBackend) -> None:
    Balancer(backend).apply([_service("wrr", weights=(1, 2, 3))])
    n = 600
    counts = collections.Counter(_answers(lab, n))
    assert None not in counts
    expected = {"rs1": n / 6, "rs2": n * 2 / 6, "rs3": n * 3 / 6}
    chi2 = sum((counts[k] - v) ** 2 / v for k, v in expected.items())
    assert chi2 < 13.8, (counts, chi2)  # chi-square, 2 degrees of freedom, p = 0.001


def test_persistence_holds_within_the_timeout_and_is_released_after(lab: Lab, backend: IPTablesBackend) -> None:
    Balancer(backend).apply([_service(persistence=Persistence(timeout=2))])
    assert _answers(lab, 4) == ["rs1"] * 4  # the picks are not even consulted: rs2 stays next
    time.sleep(2.3)
    assert _answers(lab, 2) == ["rs2", "rs2"]


def test_wrr_without_weighted_random_is_refused_before_anything_changes(lab: Lab) -> None:
    with lab.inside("dir"):
        strict = IPTablesBackend(legacy_beside_nft=True)
        try:
            with pytest.raises(Unsupported) as refused:
                Balancer(strict).apply([_service("wrr")])
            assert refused.value.capability.value == "scheduler-wrr"
            assert len(strict.read()) == 0
        finally:
            strict.close()


def test_a_fwmark_service_and_its_mark_rules_are_one_change(lab: Lab, backend: IPTablesBackend) -> None:
    lb = Balancer(backend)
    fwmark = VirtualService(fwmark=1, scheduler="rr", real_servers=[RealServer("10.91.1.2", 0, forward="nat")])
    mark = FirewallMark(1, "tcp", ports=(80, 443), destinations=[VIP])
    lab.server("rs1", "rs1-443", 443)
    ops = lb.apply(Table([fwmark], rules=[mark]))
    assert [type(op).__name__ for op in ops] == ["AddService", "AddRealServer", "AddRule"]
    assert lab.ask("client", VIP, 80) == "rs1" and lab.ask("client", VIP, 443) == "rs1-443"
    lb.apply(Table([], rules=[]))
    assert backend.read() == Table([], rules={})
    assert lab.ask("client", VIP, 80, timeout=0.5) is None  # nothing listens on the director itself


def _serve(sock: socket.socket, reply: Callable[[str], str]) -> socket.socket:
    """Answer each connection to ``sock`` with ``reply(peer address)``, in a thread, until closed."""

    def serve() -> None:
        while True:
            try:
                conn, peer = sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(reply(peer[0]).encode() + b"\n")

    threading.Thread(target=serve, daemon=True).start()
    return sock


def _transparent_listener(lab: Lab, ns: str, port: int, identity: str) -> socket.socket:
    with lab.inside(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_IP, 19, 1)  # IP_TRANSPARENT: accept for addresses not our own
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(16)
    return _serve(sock, lambda peer: identity)


def test_transparent_proxy_marks_and_routes_web_traffic_to_the_director(lab: Lab, backend: IPTablesBackend) -> None:
    web = "10.91.1.2"  # a web server behind the director: the client's traffic to it crosses the director
    lab.server("rs1", "ssh", 22)
    proxy = _transparent_listener(lab, "dir", PORT, "proxy")
    try:
        assert lab.ask("client", web, PORT) == "rs1"
        Balancer(backend).apply(Table([], rules=[FirewallMark(1, "tcp", ports=(80, 443)), PolicyRoute(1, 100)]))
        assert lab.ask("client", web, PORT) == "proxy"
        assert lab.ask("client", web, 22) == "ssh"  # unmarked traffic is routed as before
        assert backend.read().rules == {r.key: r for r in (FirewallMark(1, "tcp", ports=(80, 443)),
                                                           PolicyRoute(1, 100))}
        Balancer(backend).apply(Table([], rules=[]))
        assert lab.ask("client", web, PORT) == "rs1"
        assert "lookup 100" not in lab.run("dir", "ip", "rule")
    finally:
        proxy.close()


def test_forward_all_marks_every_packet_but_those_to_the_director(lab: Lab, backend: IPTablesBackend) -> None:
    rules = [FirewallMark(1, ("tcp", "udp"), except_destinations=["10.90.0.1"]),
             FirewallMark(2, destinations=["10.90.0.1"])]
    Balancer(backend).apply(Table([], rules=rules))
    lines = lab.save("dir", "mangle")
    assert "-A LBCORE-M-00000001 -d 10.90.0.1/32 -j RETURN" in lines
    assert "-A LBCORE-M-00000001 -p tcp -j MARK --set-xmark 0x1/0xffffffff" in lines
    assert "-A LBCORE-M-00000002 -d 10.90.0.1/32 -j MARK --set-xmark 0x2/0xffffffff" in lines
    assert backend.read().rules == {r.key: r for r in rules}


def test_auto_nat_sends_real_server_traffic_out_with_the_directors_address(lab: Lab, backend: IPTablesBackend) -> None:
    with lab.inside("client"):  # a server outside that answers with the address it sees
        outside = _serve(socket.create_server(("0.0.0.0", 8000)), lambda peer: peer)
    lab.run("client", "ip", "route", "add", "10.91.0.0/16", "via", "10.90.0.1")
    out = lab.run("dir", "ip", "-o", "addr", "show", "to", "10.90.0.1").split()[1]
    try:
        assert lab.ask("rs1", "10.90.0.2", 8000) == "10.91.1.2"
        Balancer(backend).apply(Table([], rules=[AutoNat(out, ["10.91.0.0/16"])]))
        assert lab.ask("rs1", "10.90.0.2", 8000) == "10.90.0.1"
        assert backend.read().rules == {("auto-nat", out): AutoNat(out, ["10.91.0.0/16"])}
    finally:
        outside.close()


def test_the_dr_redirect_lets_a_real_server_accept_vip_traffic(lab: Lab) -> None:
    # DR as the real server sees it: frames for the VIP arrive although the VIP is not its own.
    lab.run("client", "ip", "route", "add", "10.92.0.100/32", "via", "10.90.0.1")
    lab.run("dir", "ip", "route", "add", "10.92.0.100/32", "via", "10.91.1.2")
    assert lab.ask("client", "10.92.0.100", PORT, timeout=0.5) is None
    with lab.inside("rs1"):
        rs = IPTablesBackend(legacy_beside_nft=True)
        try:
            Balancer(rs).apply(Table([], rules=[Redirect("10.92.0.100")]))
        finally:
            rs.close()
    assert lab.ask("client", "10.92.0.100", PORT) == "rs1"
    assert "-A LBCORE-REDIRECT -d 10.92.0.100/32 -p tcp -m comment --comment \"redirect dst=10.92.0.100 " \
        "proto=tcp\" -j REDIRECT" in lab.save("rs1", "nat")


def test_a_transparent_mode_redirect_moves_port_80_to_8080(lab: Lab) -> None:
    lab.server("rs1", "rs1-8080", 8080)
    with lab.inside("rs1"):
        rs = IPTablesBackend(legacy_beside_nft=True)
        try:
            Balancer(rs).apply(Table([], rules=[Redirect(None, port=PORT, to_port=8080)]))
        finally:
            rs.close()
    assert lab.ask("client", "10.91.1.2", PORT) == "rs1-8080"


def test_iptables_save_and_restore_give_lbcore_back_its_own_state(lab: Lab, backend: IPTablesBackend) -> None:
    # An operator's netfilter-persistent saves and restores the whole table: lbcore's rules must
    # survive that, and read back as the same objects.
    fwmark = VirtualService(fwmark=3, scheduler="rr", real_servers=[RealServer("10.91.1.2", 8080, forward="nat")])
    rules = [FirewallMark(3, "udp", ports=(53,)), AutoNat("lo", ["10.91.0.0/16"]), Redirect("10.90.0.100")]
    desired = Table([_service(persistence=Persistence(timeout=60, netmask="255.255.255.0")), fwmark], rules=rules)
    Balancer(backend).apply(desired)
    before = backend.read()
    for table in ("nat", "mangle"):
        saved = lab.run("dir", "iptables-legacy-save", "-t", table)
        lab.run("dir", "iptables-legacy-restore", stdin=saved)
    assert backend.read() == before
    assert Balancer(backend).plan(desired) == []


def test_a_loopback_vip_takes_dr_traffic_and_keeps_arp_quiet(lab: Lab) -> None:
    vip = "10.92.0.100"
    lab.run("client", "ip", "route", "add", f"{vip}/32", "via", "10.90.0.1")
    lab.run("dir", "ip", "route", "add", f"{vip}/32", "via", "10.91.1.2")  # DR: to the real server's MAC
    with lab.inside("rs1"):
        rs = IPTablesBackend(legacy_beside_nft=True)
        try:
            Balancer(rs).apply(Table([], rules=[LoopbackVIP(vip)]))
            assert rs.read().rules == {LoopbackVIP(vip).key: LoopbackVIP(vip)}
        finally:
            rs.close()
    assert lab.ask("client", vip, PORT) == "rs1"
    assert f"inet {vip}/32" in lab.run("rs1", "ip", "-4", "addr", "show", "dev", "lo")
    assert lab.run("rs1", "cat", "/proc/sys/net/ipv4/conf/all/arp_ignore").strip() == "1"
    assert lab.run("rs1", "cat", "/proc/sys/net/ipv4/conf/all/arp_announce").strip() == "2"
    # Asked by ARP on its link, the real server keeps quiet about the VIP: only the director may answer.
    link = lab.run("dir", "ip", "-o", "addr", "show", "to", "10.91.1.1").split()[1]
    lab.run("dir", "ip", "route", "replace", f"{vip}/32", "dev", link)
    assert lab.ask("client", vip, PORT, timeout=1.5) is None
    assert "FAILED" in lab.run("dir", "ip", "neigh", "show", vip) or \
        "INCOMPLETE" in lab.run("dir", "ip", "neigh", "show", vip)
    # And it is arp_ignore that keeps it quiet: without it, the real server answers for the VIP.
    lab.sysctl("rs1", "net.ipv4.conf.all.arp_ignore", "0")
    lab.run("dir", "ip", "neigh", "flush", "dev", link)
    assert lab.ask("client", vip, PORT) == "rs1"


class MangleRefused(IPTablesBackend):
    """Its commits of the mangle table fail, as a kernel refusing them would."""

    def _commit(self, name: str, *args: Any, **kwargs: Any) -> bool:
        rules = args[1]
        if name == "mangle" and rules:
            raise BackendError("iptables", "commit of table mangle failed (injected)")
        return super()._commit(name, *args, **kwargs)


def test_a_failed_mangle_commit_takes_the_nat_commit_back(lab: Lab) -> None:
    with lab.inside("dir"):
        backend = MangleRefused(legacy_beside_nft=True)
        try:
            lb = Balancer(backend)
            lb.apply([_service()])
            before, saved = backend.read(), lab.save("dir", "nat")
            with pytest.raises(BackendError, match="injected"):
                lb.apply(Table([_service(weights=(1, 0, 1))], rules=[FirewallMark(1, "tcp")]))
            assert backend.read() == before and lab.save("dir", "nat") == saved
        finally:
            backend.close()


def test_a_refused_route_takes_back_the_routing_steps_before_it(lab: Lab, backend: IPTablesBackend) -> None:
    with pytest.raises(BackendError, match="rtnetlink refused"):
        # No route to 10.99.99.99: the kernel refuses the gateway (ENETUNREACH).
        Balancer(backend).apply(Table([], rules=[LoopbackVIP("10.92.0.7"), PolicyRoute(1, 100),
                                                PolicyRoute(2, 101, via="10.99.99.99")]))
    assert backend.read().rules == {}
    assert "10.92.0.7" not in lab.run("dir", "ip", "-4", "addr", "show", "dev", "lo")
    assert "lookup 100" not in lab.run("dir", "ip", "rule")


def test_two_services_whose_chain_names_collide_are_refused_not_merged(
        lab: Lab, backend: IPTablesBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    from lbcore_iptables import _layout

    monkeypatch.setattr(_layout, "service_id", lambda key: "COLLISION0")  # 40 bits make it rare, not impossible
    first = _service()
    Balancer(backend).apply([first])
    other = VirtualService("tcp", VIP, 8080, scheduler="rr", real_servers=[RealServer("10.91.2.2", 80, forward="nat")])
    with pytest.raises(BackendError, match="cannot hold both"):
        Balancer(backend).add_service(other)
    assert list(backend.read()) == [first]
