"""rr (ip_vs_rr.c): a cursor into the dest list that survives the deletion of the dest it is on."""

from __future__ import annotations

from _lab import Lab, rs


def test_rr_goes_round_the_list_newest_first() -> None:
    lab = Lab("rr", rs("A"), rs("B"), rs("C"))
    assert lab.order() == ["C", "B", "A"]
    assert lab.picks(7) == ["C", "B", "A", "C", "B", "A", "C"]


def test_rr_ignores_weights_other_than_zero() -> None:
    lab = Lab("rr", rs("A", weight=1), rs("B", weight=100))
    assert lab.picks(4) == ["B", "A", "B", "A"]


def test_rr_skips_weight_zero() -> None:
    lab = Lab("rr", rs("A"), rs("B", weight=0), rs("C"))
    assert lab.picks(4) == ["C", "A", "C", "A"]


def test_rr_skips_an_overloaded_dest() -> None:
    lab = Lab("rr", rs("A"), rs("B", u_threshold=1), rs("C"))
    # B's first connection reaches u_threshold 1 and sets OVERLOAD: rr passes it from then on.
    assert lab.picks(5) == ["C", "B", "A", "C", "A"]
    assert lab.dest("B").overloaded


def test_rr_after_deleting_the_current_dest_continues_with_its_successor() -> None:
    lab = Lab("rr", rs("A"), rs("B"), rs("C"), rs("D"))
    assert lab.picks(2) == ["D", "C"]  # the cursor is on C
    lab.delete("C")
    # ip_vs_rr_del_dest() moves the cursor back to D, so the next pick is C's successor B.
    assert lab.picks(4) == ["B", "A", "D", "B"]


def test_rr_after_deleting_the_current_first_dest_restarts_from_the_head() -> None:
    lab = Lab("rr", rs("A"), rs("B"), rs("C"))
    assert lab.pick() == "C"
    lab.delete("C")
    assert lab.picks(3) == ["B", "A", "B"]


def test_rr_deleting_another_dest_leaves_the_cursor_alone() -> None:
    lab = Lab("rr", rs("A"), rs("B"), rs("C"), rs("D"))
    assert lab.picks(2) == ["D", "C"]
    lab.delete("D")
    assert lab.picks(3) == ["B", "A", "C"]


def test_rr_reaches_a_newly_added_dest_only_after_wrapping() -> None:
    lab = Lab("rr", rs("A"), rs("B"), rs("C"))
    assert lab.picks(2) == ["C", "B"]
    lab.add(rs("D"))  # to the head of the list; add_dest leaves the cursor on B
    assert lab.order() == ["D", "C", "B", "A"]
    assert lab.picks(5) == ["A", "D", "C", "B", "A"]


def test_rr_with_every_dest_unavailable_picks_none_and_keeps_its_cursor() -> None:
    lab = Lab("rr", rs("A"), rs("B"), rs("C"))
    assert lab.picks(2) == ["C", "B"]
    for name in "ABC":
        lab.edit(name, weight=0)
    assert lab.pick() is None
    lab.edit("A", weight=1)
    lab.edit("C", weight=1)
    assert lab.picks(2) == ["A", "C"]  # still after B


def test_rr_editing_a_dest_does_not_move_the_cursor_or_the_dest() -> None:
    lab = Lab("rr", rs("A"), rs("B"), rs("C"))
    assert lab.pick() == "C"
    lab.edit("A", weight=5)
    assert lab.order() == ["C", "B", "A"]
    assert lab.picks(2) == ["B", "A"]


def test_rr_cursor_survives_a_service_edit_with_the_same_scheduler() -> None:
    lab = Lab("rr", rs("A"), rs("B"), rs("C"))
    assert lab.pick() == "C"
    lab.lb.edit_service(lab.service)
    assert lab.pick() == "B"


def test_rr_a_readded_dest_goes_to_the_front() -> None:
    lab = Lab("rr", rs("A"), rs("B"), rs("C"))
    lab.delete("A")
    lab.add(rs("A"))
    assert lab.order() == ["A", "C", "B"]
    assert lab.picks(3) == ["A", "C", "B"]
