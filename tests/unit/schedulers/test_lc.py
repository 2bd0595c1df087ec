"""lc (ip_vs_lc.c): the least (activeconns << 8) + inactconns, compared as unsigned, ties to the first."""

from __future__ import annotations

from _lab import Lab, rs


def test_lc_ties_go_to_the_first_dest_in_list_order() -> None:
    lab = Lab("lc", rs("A"), rs("B"), rs("C"))
    assert lab.pick() == "C"  # all idle: the newest dest


def test_lc_ignores_weight_apart_from_zero() -> None:
    lab = Lab("lc", rs("A", weight=100), rs("B", weight=1))
    # B is first in the list; A's larger weight does not matter.
    assert lab.picks(4) == ["B", "A", "B", "A"]


def test_lc_open_connections_spread_evenly() -> None:
    lab = Lab("lc", rs("A"), rs("B"), rs("C"))
    assert lab.picks(6) == ["C", "B", "A", "C", "B", "A"]
    assert [lab.dest(n).activeconns for n in "ABC"] == [2, 2, 2]


def test_lc_one_active_connection_outweighs_255_inactive_ones() -> None:
    lab = Lab("lc", rs("A"), rs("B"))
    b, a = lab.dest("B"), lab.dest("A")
    b.activeconns = 1  # overhead 256
    a.inactconns = 255  # overhead 255
    assert lab.pick() == "A"


def test_lc_equal_overhead_of_active_and_inactive_goes_to_the_first() -> None:
    lab = Lab("lc", rs("A"), rs("B"))
    lab.dest("B").activeconns = 1  # 256
    lab.dest("A").inactconns = 256  # 256
    assert lab.pick() == "B"


def test_lc_counts_closed_connections_as_inactive() -> None:
    lab = Lab("lc", rs("A"), rs("B"))
    first = lab.open()
    assert first is not None and str(first.real_server) == "198.51.100.2"  # B
    lab.sim.disconnect(first)  # DR: FIN_WAIT, inactive for 120 s
    assert (lab.dest("B").activeconns, lab.dest("B").inactconns) == (0, 1)
    assert lab.pick() == "A"  # B's overhead is 1, A's 0
    lab.sim.advance(121)
    assert lab.dest("B").inactconns == 0


def test_lc_compares_overheads_as_unsigned() -> None:
    lab = Lab("lc", rs("A"), rs("B"))
    # 2**23 active connections make (active << 8) wrap to INT_MIN: negative as an int, but
    # 0x80000000 as the unsigned lc uses, so B is the most loaded, not the least.
    lab.dest("B").activeconns = 1 << 23
    lab.dest("A").activeconns = 5
    assert lab.dest("B").overhead() < 0
    assert lab.pick() == "A"


def test_lc_skips_weight_zero_and_overloaded() -> None:
    lab = Lab("lc", rs("A"), rs("B", weight=0), rs("C", u_threshold=1))
    assert lab.picks(3) == ["C", "A", "A"]
    assert lab.dest("C").overloaded


def test_lc_with_no_eligible_dest_picks_none() -> None:
    lab = Lab("lc", rs("A", weight=0), rs("B", weight=0))
    assert lab.pick() is None
