"""lblcr (ip_vs_lblcr.c): a cache from destination address to a set of dests, shrunk when stale."""

from __future__ import annotations

import ipaddress

from _lab import VIP, Lab, letter, rs

from lbcore import Sysctls


def members(lab: Lab, site: str = VIP) -> list[str]:
    entry = lab.scheduler.table.get(ipaddress.ip_address(site))
    return [] if entry is None else [letter(d.address) for d in entry.members]


def grown(expiration: int | None = None) -> Lab:
    """The VIP's set grows to [B, A]: A (weight 1) gets 2 active while B (weight 3) is idle."""
    lab = Lab("lblcr", rs("B", weight=3), rs("A", weight=1))  # list [A, B]
    if expiration is not None:
        lab.lb.set_sysctls(Sysctls(lblcr_expiration=expiration))
    assert lab.picks(3) == ["A", "A", "B"]
    return lab


def test_lblcr_first_pick_is_wlc_and_starts_a_set() -> None:
    lab = Lab("lblcr", rs("A"), rs("B"))
    assert lab.pick() == "B"
    assert members(lab) == ["B"]


def test_lblcr_adds_the_wlc_pick_when_the_set_minimum_is_overloaded() -> None:
    lab = Lab("lblcr", rs("B", weight=3), rs("A", weight=1))  # list [A, B]
    assert lab.picks(2) == ["A", "A"]
    assert members(lab) == ["A"]
    # A: 2 active > weight 1 while B is under half load: wlc picks B, which joins at the front.
    assert lab.pick() == "B"
    assert members(lab) == ["B", "A"]


def test_lblcr_picks_the_least_loaded_member_of_the_set() -> None:
    lab = grown()
    # Set [B, A]: B 256 / 3 against A 512 / 1: B. Both stay members.
    assert lab.picks(2) == ["B", "B"]
    assert members(lab) == ["B", "A"]


def test_lblcr_set_minimum_skips_an_overloaded_member_and_adds_the_wlc_pick() -> None:
    lab = Lab("lblcr", rs("A", weight=5), rs("B", weight=5, u_threshold=1))
    assert lab.pick() == "B"
    assert lab.dest("B").overloaded
    # set_min skips the overloaded B: no member left, so wlc picks A and it joins the set.
    assert lab.pick() == "A"
    assert members(lab) == ["A", "B"]


def test_lblcr_set_minimum_skips_a_deleted_member() -> None:
    lab = grown()
    lab.delete("B")
    # B (not AVAILABLE) is skipped; A has 2 active > weight 1, but no dest left is under half
    # load, so A is not overloaded in lblc's sense and is returned.
    assert lab.pick() == "A"
    assert members(lab) == ["B", "A"]  # the entry keeps the deleted dest (and its reference)


def test_lblcr_set_minimum_never_switches_to_a_deleted_member() -> None:
    lab = Lab("lblcr", rs("B", weight=3), rs("A", weight=1))  # list [A, B]
    conns = [lab.open() for _ in range(3)]
    assert [c and str(c.real_server)[-1] for c in conns] == ["1", "1", "2"]  # A, A, B
    for conn in conns[:2]:
        assert conn is not None
        lab.sim.disconnect(conn)
    lab.sim.advance(121)  # A is idle now: the lighter member per weight
    lab.delete("A")
    assert members(lab) == ["B", "A"]
    assert lab.pick() == "B"


def test_lblcr_set_shrinks_after_lblcr_expiration_without_change() -> None:
    lab = grown(expiration=600)
    lab.sim.advance(600)
    assert lab.pick() == "B"  # now == lastmod + 600: not yet (the kernel's time_after is strict)
    assert members(lab) == ["B", "A"]
    lab.sim.advance(1)
    # set_max, the most loaded per weight (A: 512 / 1 against B: 512 / 3), is erased; the pick
    # was chosen before the erase.
    assert lab.pick() == "B"
    assert members(lab) == ["B"]


def test_lblcr_set_does_not_shrink_below_one_member() -> None:
    lab = Lab("lblcr", rs("A"))
    lab.lb.set_sysctls(Sysctls(lblcr_expiration=60))
    assert lab.pick() == "A"
    lab.sim.advance(500)
    assert lab.pick() == "A"
    assert members(lab) == ["A"]


def test_lblcr_set_does_not_shrink_within_the_default_expiration() -> None:
    lab = grown()
    lab.sim.advance(800)
    lab.picks(2)
    assert members(lab) == ["B", "A"]


def test_lblcr_with_no_eligible_dest_picks_none() -> None:
    lab = Lab("lblcr", rs("A", weight=0))
    assert lab.pick() is None
    assert members(lab) == []
