"""wlc (ip_vs_wlc.c): least overhead per weight; products in 64 bits, strict '>', ties to the first."""

from __future__ import annotations

from _lab import Lab, rs


def test_wlc_tie_goes_to_the_earlier_dest_in_the_list() -> None:
    lab = Lab("wlc", rs("A"), rs("B"), rs("C"))
    assert lab.pick() == "C"


def test_wlc_tie_of_equal_ratios_keeps_the_earlier_dest() -> None:
    lab = Lab("wlc", rs("A", weight=1), rs("B", weight=2))
    lab.dest("B").activeconns = 2  # 512 / 2
    lab.dest("A").activeconns = 1  # 256 / 1: the same load per weight
    assert lab.pick() == "B"


def test_wlc_distributes_open_connections_by_weight() -> None:
    lab = Lab("wlc", rs("A", weight=1), rs("B", weight=3))
    # list [B, A]. A takes over only when B's load * 1 > A's load * 3, strictly: B holds 3 per
    # A's 1, and the ties (768 vs 256*3, 1536 vs 512*3) stay with B.
    assert lab.picks(8) == ["B", "A", "B", "B", "B", "A", "B", "B"]
    assert (lab.dest("A").activeconns, lab.dest("B").activeconns) == (2, 6)


def test_wlc_weight_zero_first_dest_is_skipped_and_later_ones_never_win() -> None:
    lab = Lab("wlc", rs("A", weight=1), rs("B", weight=0), rs("C", weight=0))
    lab.dest("A").activeconns = 1000
    assert lab.picks(3) == ["A", "A", "A"]


def test_wlc_skips_overloaded() -> None:
    lab = Lab("wlc", rs("A"), rs("B", u_threshold=2))
    assert lab.picks(4) == ["B", "A", "B", "A"]
    assert lab.dest("B").overloaded
    assert lab.picks(2) == ["A", "A"]


def test_wlc_counts_inactive_connections_once_and_active_ones_256_times() -> None:
    lab = Lab("wlc", rs("A"), rs("B"))
    lab.dest("B").inactconns = 255
    lab.dest("A").activeconns = 1
    assert lab.pick() == "B"
    lab.dest("B").inactconns = 300
    assert lab.pick() == "A"


def test_wlc_products_do_not_overflow() -> None:
    lab = Lab("wlc", rs("A", weight=2_000_000_000), rs("B", weight=2_000_000_000))
    # 768e6 * 2e9 is about 1.5e18: far past 32 bits, still exact in the kernel's s64 products.
    lab.dest("B").activeconns = 3_000_000
    lab.dest("A").activeconns = 2_999_999
    assert lab.pick() == "A"


def test_wlc_compares_overheads_as_signed_ints() -> None:
    lab = Lab("wlc", rs("A"), rs("B"))
    # (2**23 << 8) wraps to INT_MIN: wlc reads it as a negative load, so B wins (lc would not).
    lab.dest("B").activeconns = 1 << 23
    lab.dest("A").activeconns = 5
    assert lab.pick() == "B"


def test_wlc_with_no_eligible_dest_picks_none() -> None:
    lab = Lab("wlc", rs("A", weight=0), rs("B", u_threshold=1))
    assert lab.pick() == "B"
    assert lab.pick() is None
