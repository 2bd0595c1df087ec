"""The simulated DNAT balancer: weighted random's shares, persistence, refusals and fall-through."""

import collections

import pytest

from lbcore import Balancer, InvalidField, Persistence, RealServer, Unsupported, VirtualService
from lbcore.dnat import picks, random_threshold
from lbcore.rules import FirewallMark
from lbcore.sim import SimBackend
from lbcore.table import Table

VIP = "192.0.2.10"


def web(scheduler: str = "rr", weights: tuple[int, ...] = (1, 1, 1), **kwargs: object) -> VirtualService:
    return VirtualService("tcp", VIP, 80, scheduler=scheduler, real_servers=[
        RealServer(f"198.51.100.{i}", 80, forward="nat", weight=w) for i, w in enumerate(weights, 1)], **kwargs)


def test_random_thresholds_are_iptables_quantised_probabilities() -> None:
    assert random_threshold(0.5) == 0x40000000
    assert random_threshold(1.0) == 0x80000000
    assert [p.threshold for p in picks(web("wrr", (1, 2, 3)))] == [random_threshold(1 / 6), random_threshold(2 / 5),
                                                                  None]
    with pytest.raises(InvalidField) as refused:
        random_threshold(1.5)
    assert (refused.value.field, refused.value.value) == ("probability", 1.5)


def test_weighted_random_gives_each_real_server_its_weights_share() -> None:
    sim = SimBackend(dataplane="iptables", weighted="random", seed=7)
    Balancer(sim).apply([web("wrr", (1, 2, 3))])
    n = 6000
    counts = collections.Counter(str(sim.connect(f"203.0.113.{i % 200 + 1}", VIP, 80).real_server)  # type: ignore[union-attr]
                                 for i in range(n))
    expected = {"198.51.100.1": n / 6, "198.51.100.2": n / 3, "198.51.100.3": n / 2}
    assert sum((counts[k] - v) ** 2 / v for k, v in expected.items()) < 13.8  # chi-square, 2 df, p = 0.001


def test_a_persistent_client_stays_and_which_changes_nothing() -> None:
    sim = SimBackend(dataplane="iptables")
    Balancer(sim).apply([web(persistence=Persistence(timeout=60))])
    assert sim.which("203.0.113.1", VIP, 80) == "198.51.100.1:80"
    first = sim.connect("203.0.113.1", VIP, 80)
    assert first is not None and str(first.real_server) == "198.51.100.1"
    assert [sim.which("203.0.113.1", VIP, 80) for _ in range(3)] == ["198.51.100.1:80"] * 3
    sim.advance(61)
    assert sim.which("203.0.113.1", VIP, 80) == "198.51.100.2:80"


def test_the_iptables_data_plane_refuses_what_the_iptables_backend_refuses() -> None:
    sim = SimBackend(dataplane="iptables")
    with pytest.raises(Unsupported) as refused:
        Balancer(sim).apply([web("wlc")])
    assert refused.value.capability.value == "scheduler-wlc"
    with pytest.raises(Unsupported):
        Balancer(sim).apply([web("wrr")])
    with pytest.raises(InvalidField):
        sim.status()
    with pytest.raises(InvalidField):
        SimBackend(weighted="random")


def test_firewall_marks_feed_a_fwmark_service_in_both_data_planes() -> None:
    fwmark = VirtualService(fwmark=1, scheduler="rr", real_servers=[RealServer("198.51.100.9", 0, forward="nat")])
    desired = Table([fwmark], rules=[FirewallMark(1, "tcp", ports=(80, 443), destinations=[VIP])])
    for sim in (SimBackend(), SimBackend(dataplane="iptables")):
        Balancer(sim).apply(desired)
        assert sim.which("203.0.113.1", VIP, 443) == "198.51.100.9:443"
        assert sim.which("203.0.113.1", VIP, 22) is None
        assert sim.which("203.0.113.1", VIP, 22, mark=1) == "198.51.100.9:22"
