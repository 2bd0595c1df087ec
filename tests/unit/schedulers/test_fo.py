"""fo (ip_vs_fo.c): the highest weight that is not overloaded; ties go to the first in list."""

from __future__ import annotations

from _lab import Lab, rs


def test_fo_always_picks_the_highest_weight_regardless_of_load() -> None:
    lab = Lab("fo", rs("A", weight=5), rs("B", weight=3), rs("C", weight=1))
    assert lab.picks(5) == ["A"] * 5
    assert lab.dest("A").activeconns == 5


def test_fo_tie_goes_to_the_first_in_list() -> None:
    lab = Lab("fo", rs("A", weight=5), rs("B", weight=5), rs("C", weight=1))
    assert lab.pick() == "B"


def test_fo_fails_over_when_the_top_dest_overloads() -> None:
    lab = Lab("fo", rs("A", weight=5, u_threshold=2), rs("B", weight=3))
    assert lab.picks(4) == ["A", "A", "B", "B"]


def test_fo_fails_over_when_the_top_dest_is_quiesced_and_back_when_restored() -> None:
    lab = Lab("fo", rs("A", weight=5), rs("B", weight=3))
    assert lab.pick() == "A"
    lab.edit("A", weight=0)
    assert lab.pick() == "B"
    lab.edit("A", weight=3)
    assert lab.pick() == "B"  # a tie: B is first in the list [B, A], and an edit moves nothing
    lab.edit("A", weight=4)
    assert lab.pick() == "A"
