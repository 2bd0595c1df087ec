"""sed (ip_vs_sed.c): wlc's procedure with overhead activeconns + 1; inactive connections are free."""

from __future__ import annotations

from _lab import Lab, rs


def test_sed_ignores_inactive_connections() -> None:
    lab = Lab("sed", rs("A"), rs("B"))
    lab.dest("B").inactconns = 50
    # B (first) and A both expect delay 1: the tie keeps B. wlc would pick A.
    assert lab.pick() == "B"


def test_sed_adds_one_to_the_active_count() -> None:
    lab = Lab("sed", rs("A", weight=1), rs("B", weight=2))
    lab.dest("B").activeconns = 1
    # B: (1 + 1) / 2 = 1, A: (0 + 1) / 1 = 1: a tie, B stays. Plain active/weight would pick A.
    assert lab.pick() == "B"
    # B: (2 + 1) / 2 > A: 1 / 1.
    assert lab.pick() == "A"


def test_sed_prefers_the_big_weight_while_it_has_room() -> None:
    lab = Lab("sed", rs("A", weight=1), rs("B", weight=4))
    # B takes connections while (active + 1) * 1 <= 1 * 4, ties staying with B (first in list).
    assert lab.picks(6) == ["B", "B", "B", "B", "A", "B"]


def test_sed_with_udp_always_picks_the_first_dest_of_maximal_weight() -> None:
    lab = Lab("sed", rs("A", weight=1), rs("B", weight=3), rs("C", weight=3), rs("D", weight=2), protocol="udp")
    # UDP connections are never active, so every dest keeps delay 1 / weight.
    assert lab.picks(5) == ["C"] * 5
    assert lab.dest("C").inactconns == 5


def test_sed_skips_weight_zero_and_overloaded() -> None:
    lab = Lab("sed", rs("A"), rs("B", weight=0), rs("C", weight=5, u_threshold=1))
    assert lab.picks(3) == ["C", "A", "A"]


def test_sed_with_no_eligible_dest_picks_none() -> None:
    lab = Lab("sed", rs("A", weight=0))
    assert lab.pick() is None
