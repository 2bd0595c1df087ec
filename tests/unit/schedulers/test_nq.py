"""nq (ip_vs_nq.c): the first idle dest in list order at once, else sed's choice."""

from __future__ import annotations

from _lab import Lab, rs


def test_nq_returns_the_first_idle_dest_even_against_a_much_heavier_one() -> None:
    lab = Lab("nq", rs("A", weight=1), rs("B", weight=100))
    lab.dest("B").activeconns = 1
    # sed would keep B ((1 + 1) / 100 < 1 / 1); nq never queues while a dest is idle.
    assert lab.pick() == "A"


def test_nq_idle_first_in_list_order() -> None:
    lab = Lab("nq", rs("A"), rs("B"), rs("C"))
    lab.dest("C").activeconns = 1
    assert lab.pick() == "B"  # B and A are idle: B comes first


def test_nq_idle_means_no_active_connection_inactive_ones_do_not_count() -> None:
    lab = Lab("nq", rs("A"), rs("B"))
    lab.dest("B").inactconns = 40
    lab.dest("A").activeconns = 0
    assert lab.pick() == "B"


def test_nq_fills_idle_dests_first_then_uses_shortest_expected_delay() -> None:
    lab = Lab("nq", rs("A", weight=1), rs("B", weight=3))
    # B, then A while idle; then sed's rule: A only once (B.active + 1) * 1 > (1 + 1) * 3.
    assert lab.picks(8) == ["B", "A", "B", "B", "B", "B", "B", "A"]


def test_nq_with_udp_always_picks_the_first_eligible_dest() -> None:
    lab = Lab("nq", rs("A", weight=5), rs("B", weight=1), rs("C", weight=0), protocol="udp")
    assert lab.picks(4) == ["B"] * 4


def test_nq_skips_weight_zero_and_overloaded_even_when_idle() -> None:
    lab = Lab("nq", rs("A"), rs("B", weight=0), rs("C", u_threshold=1))
    assert lab.picks(3) == ["C", "A", "A"]


def test_nq_with_no_eligible_dest_picks_none() -> None:
    lab = Lab("nq", rs("A", weight=0), rs("B", weight=0))
    assert lab.pick() is None
