"""lbcore.testing.assertions on the simulator's own connections: they pass where they should, and say why not."""

from __future__ import annotations

import pytest

from lbcore import Balancer, InvalidField, Persistence, RealServer, VirtualService
from lbcore.sim import SimBackend
from lbcore.testing.assertions import assert_balanced, assert_sticky

VIP = "192.0.2.50"
RS = ("198.51.100.1", "198.51.100.2")


def sim(scheduler: str = "rr", weights: tuple[int, int] = (1, 1), persistent: bool = False) -> SimBackend:
    backend = SimBackend()
    Balancer(backend).apply([VirtualService(
        protocol="tcp", address=VIP, port=80, scheduler=scheduler,
        persistence=Persistence(600) if persistent else None,
        real_servers=[RealServer(a, 80, weight=w) for a, w in zip(RS, weights)])])
    return backend


def test_balanced_by_weight_passes_and_a_wrong_weight_fails_naming_the_shares() -> None:
    backend = sim("wrr", (3, 1))
    conns = [backend.connect(f"203.0.113.{i}", VIP, 80) for i in range(1, 201)]
    assert_balanced(conns, weights={f"{RS[0]}:80": 3, f"{RS[1]}:80": 1}, tolerance=0.01)
    with pytest.raises(AssertionError) as caught:
        assert_balanced(conns, tolerance=0.1)
    assert str(caught.value).splitlines() == [
        "not balanced: 198.51.100.1:80 took 75.0%, expected 50.0% +/- 10% of it; "
        "198.51.100.2:80 took 25.0%, expected 50.0% +/- 10% of it",
        "200 connections:",
        "  198.51.100.1:80: 150 (75.0%, expected 50.0%)  <- off",
        "  198.51.100.2:80: 50 (25.0%, expected 50.0%)  <- off",
    ]


def test_a_refused_connection_fails_balanced_unless_allowed() -> None:
    backend = sim()
    conns = [backend.connect("203.0.113.1", VIP, 80), backend.connect("203.0.113.2", VIP, 80),
             backend.connect("203.0.113.3", "192.0.2.99", 80)]
    with pytest.raises(AssertionError, match="1 of 3 connections were refused"):
        assert_balanced(conns)
    assert_balanced(conns, refused_ok=True)


def test_sticky_follows_each_client_and_allows_a_move_away_from_a_failed_server() -> None:
    backend = sim(persistent=True)
    clients = [f"203.0.113.{i}" for i in range(1, 21)]
    first = [backend.connect(c, VIP, 80) for c in clients]
    again = [backend.connect(c, VIP, 80) for c in clients]
    assert_sticky(first + again)
    assert first[0] is not None
    failed, other = first[0].endpoint, next(f"{a}:80" for a in RS if f"{a}:80" != first[0].endpoint)
    lb = Balancer(backend)
    lb.delete_real_server(next(iter(lb.read().services)), first[0].real_server, 80)
    moved = [backend.connect(c, VIP, 80) for c in clients]
    with pytest.raises(AssertionError) as caught:
        assert_sticky(first + moved)
    lines = str(caught.value).splitlines()
    assert lines[0] == "not sticky: 10 of 20 clients reached more than one real server:"
    assert lines[1] == f"  203.0.113.1: {failed} -> {other}"
    assert_sticky(first + moved, allow_moves_from=[str(first[0].real_server)])
    assert_sticky(first + moved, allow_moves_from=[failed])


def test_assertions_refuse_what_they_cannot_read() -> None:
    with pytest.raises(InvalidField):
        assert_balanced([42])  # type: ignore[list-item]
    with pytest.raises(InvalidField):
        assert_sticky(["198.51.100.1:80"])
    with pytest.raises(InvalidField):
        assert_balanced([], tolerance=-1)
