"""wrr (ip_vs_wrr.c): the cw / mw / di cursor, reset to the head by every add, delete and edit."""

from __future__ import annotations

from _lab import Lab, rs


def sequence(picks: list[str | None]) -> str:
    return "".join(p or "-" for p in picks)


def test_wrr_first_round_after_adding_is_the_cw_1_pass() -> None:
    lab = Lab("wrr", rs("A", weight=4), rs("B", weight=3), rs("C", weight=2))
    # Each add resets the cursor to the head and leaves cw at 1: every dest once, in list order.
    assert sequence(lab.picks(3)) == "CBA"
    assert lab.scheduler.mw == 4 and lab.scheduler.di == 1


def test_wrr_worked_example_a4_b3_c2() -> None:
    lab = Lab("wrr", rs("A", weight=4), rs("B", weight=3), rs("C", weight=2))
    # ipvs-notes.md §2.2: C B A | A B A C B A C B A | A B A C B A C B A
    assert sequence(lab.picks(21)) == "CBA" + "ABACBACBA" * 2


def test_wrr_worked_example_a2_b4_c6_with_gcd_2() -> None:
    lab = Lab("wrr", rs("A", weight=2), rs("B", weight=4), rs("C", weight=6))
    assert (lab.scheduler.di, lab.scheduler.mw) == (2, 5)
    # ipvs-notes.md §2.2: C B A | C | C B | C B A | C | C B | C B A ...
    assert sequence(lab.picks(21)) == "CBA" + "CCBCBA" * 3


def test_wrr_share_over_a_full_cycle_follows_the_weights() -> None:
    lab = Lab("wrr", rs("A", weight=4), rs("B", weight=3), rs("C", weight=2))
    lab.picks(3)  # the cw = 1 pass
    cycle = lab.picks(9 * 20)
    assert (cycle.count("A"), cycle.count("B"), cycle.count("C")) == (80, 60, 40)


def test_wrr_editing_a_weight_restarts_the_pass_from_the_head() -> None:
    lab = Lab("wrr", rs("A", weight=4), rs("B", weight=3), rs("C", weight=2))
    assert sequence(lab.picks(5)) == "CBAAB"  # cw = 3 pass, cursor on B
    lab.edit("C", weight=2)  # no change at all, but upd_dest runs: cursor to the head, cw kept
    # cw is still 3: from the head, B and A again, then the cw = 2 pass. Without the edit the
    # cursor would have gone on from B: A, then C B A.
    assert sequence(lab.picks(4)) == "BACB"


def test_wrr_deleting_a_dest_recomputes_gcd_and_max_weight() -> None:
    lab = Lab("wrr", rs("A", weight=2), rs("B", weight=4), rs("C", weight=6))
    lab.picks(2)
    lab.delete("C")
    assert (lab.scheduler.di, lab.scheduler.mw) == (2, 3)
    # cw was 1 (kept: 1 <= mw, rounded to k*di + 1 = 1); the list is [B, A].
    assert sequence(lab.picks(7)) == "BABBABB"


def test_wrr_never_picks_weight_zero() -> None:
    lab = Lab("wrr", rs("A", weight=2), rs("B", weight=0), rs("C", weight=1))
    picks = lab.picks(30)
    assert "B" not in picks
    assert picks.count("A") == 20 and picks.count("C") == 10


def test_wrr_with_all_weights_zero_picks_none() -> None:
    lab = Lab("wrr", rs("A", weight=0), rs("B", weight=0))
    assert lab.scheduler.mw == 0
    assert lab.picks(3) == [None, None, None]


def test_wrr_skips_overloaded_dests_and_fails_when_all_are() -> None:
    lab = Lab("wrr", rs("A", weight=1, u_threshold=1), rs("B", weight=1, u_threshold=1))
    assert lab.picks(3) == ["B", "A", None]
    assert lab.dest("A").overloaded and lab.dest("B").overloaded


def test_wrr_gcd_rounds_the_kept_current_weight_to_a_valid_step() -> None:
    lab = Lab("wrr", rs("A", weight=3))
    lab.picks(1)
    # Adding weights 6 and 9 keeps cw = 1: di = 3, mw = 9 - 2 = 7, cw = (1 // 3) * 3 + 1 = 1.
    lab.add(rs("B", weight=6))
    lab.add(rs("C", weight=9))
    assert (lab.scheduler.di, lab.scheduler.mw, lab.scheduler.cw) == (3, 7, 1)
    assert sequence(lab.picks(3 + 6)) == "CBA" + "C" + "CB" + "CBA"


def test_wrr_failing_pass_stops_at_the_cursor_and_keeps_it() -> None:
    lab = Lab("wrr", rs("A", weight=2, u_threshold=1), rs("B", weight=2, u_threshold=2),
              rs("C", weight=2, u_threshold=1), rs("D", weight=4, u_threshold=2))
    assert lab.order() == ["D", "C", "B", "A"] and (lab.scheduler.di, lab.scheduler.mw) == (2, 3)
    conns = [lab.open(f"203.0.113.{i}") for i in range(1, 8)]
    assert [c and str(c.real_server)[-1] for c in conns] == ["4", "3", "2", "1", "4", "2", None]
    # The 7th call started at B with cw = 1, wrapped to cw = mw and came back down to the last
    # pass, which the kernel stops at B (the 'stop' dest): cl stays B and cw stays 1.
    assert (lab.scheduler.cl, lab.scheduler.cw) == (lab.dest("B"), 1)
    for conn in (conns[0], conns[3], conns[4]):  # D's and A's connections
        assert conn is not None
        lab.sim.disconnect(conn)
    lab.sim.advance(121)
    assert not lab.dest("A").overloaded and not lab.dest("D").overloaded
    # From B at cw = 1 the next dest is A; a cursor reset to the head at cw = mw would give D.
    assert lab.pick("203.0.113.50") == "A"


def test_wrr_change_rounds_the_current_weight_to_the_new_gcd_step() -> None:
    lab = Lab("wrr", rs("A", weight=4), rs("B", weight=2), rs("C", weight=1))
    assert sequence(lab.picks(6)) == "CBA" + "A" + "A" + "B"  # cw = 1 pass, then 4, 3, 2: on B
    assert lab.scheduler.cw == 2
    lab.edit("C", weight=2)  # di 1 -> 2, mw 4 -> 3: cw = (2 // 2) * 2 + 1 = 3
    assert (lab.scheduler.di, lab.scheduler.mw, lab.scheduler.cw) == (2, 3, 3)
    assert sequence(lab.picks(4)) == "ACBA"  # cw 3 from the head: A; then the cw = 1 pass
