"""ovf (ip_vs_ovf.c): the highest weight until its active connections exceed its weight."""

from __future__ import annotations

from _lab import Lab, rs


def test_ovf_activeconns_equal_to_weight_is_still_eligible() -> None:
    lab = Lab("ovf", rs("A", weight=1), rs("B", weight=2))
    # B takes weight + 1 = 3 connections (active 0, 1, 2 at pick time) before overflowing.
    assert lab.picks(5) == ["B", "B", "B", "A", "A"]
    assert lab.dest("B").activeconns == 3


def test_ovf_with_every_dest_overflowing_picks_none() -> None:
    lab = Lab("ovf", rs("A", weight=1))
    assert lab.picks(3) == ["A", "A", None]


def test_ovf_inactive_connections_do_not_count() -> None:
    lab = Lab("ovf", rs("A", weight=1), rs("B", weight=2))
    lab.dest("B").inactconns = 100
    assert lab.pick() == "B"


def test_ovf_tie_of_weights_goes_to_the_first_in_list() -> None:
    lab = Lab("ovf", rs("A", weight=2), rs("B", weight=2))
    assert lab.picks(4) == ["B", "B", "B", "A"]


def test_ovf_skips_weight_zero_and_overloaded() -> None:
    lab = Lab("ovf", rs("A", weight=1), rs("B", weight=0), rs("C", weight=9, u_threshold=1))
    assert lab.picks(3) == ["C", "A", "A"]


def test_ovf_returns_to_the_big_dest_once_its_connections_close() -> None:
    lab = Lab("ovf", rs("A", weight=1), rs("B", weight=1))
    first, second = lab.open(), lab.open()
    assert first is not None and second is not None
    assert lab.pick() == "A"
    lab.sim.disconnect(first)  # DR: FIN_WAIT is inactive
    assert lab.dest("B").activeconns == 1
    assert lab.pick() == "B"
