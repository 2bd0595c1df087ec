"""lblc (ip_vs_lblc.c): a cache from the packet's destination address to one dest, and its GC.

A cache-cluster service is a fwmark service whose packets go to many destination addresses; the
tests use one (mark 1) with destinations from 192.0.2.0/24.
"""

from __future__ import annotations

import ipaddress

from _lab import VIP, Lab, rs

from lbcore import RealServer, Sysctls, Timeouts

MARK = 1
SITE1, SITE2 = "192.0.2.10", "192.0.2.20"


def cluster(*real_servers: str | RealServer) -> Lab:
    """A fwmark (cache cluster) service; a real server given by name is A, B... on port 0."""
    return Lab("lblc", *(rs(n, port=0) if isinstance(n, str) else n for n in real_servers), fwmark=MARK)


def to(lab: Lab, site: str, client: str = "203.0.113.1") -> str | None:
    return lab.pick(client, vip=site, mark=MARK)


def cached(lab: Lab, site: str) -> str | None:
    entry = lab.scheduler.table.get(ipaddress.ip_address(site))
    return None if entry is None else str(entry.dest.address)


def test_lblc_first_pick_is_wlc_and_is_cached_per_destination_address() -> None:
    lab = Lab("lblc", rs("A", weight=10), rs("B", weight=10))
    assert lab.pick() == "B"  # wlc: all idle, the first in list
    assert cached(lab, VIP) == "198.51.100.2"
    # Every client of the VIP now reaches B while B is not overloaded in lblc's sense.
    assert [lab.pick(f"203.0.113.{i}") for i in range(2, 5)] == ["B"] * 3


def test_lblc_cache_hit_ignores_the_u_threshold_overload_flag() -> None:
    lab = Lab("lblc", rs("A", weight=10), rs("B", weight=10, u_threshold=1))
    assert lab.pick() == "B"
    assert lab.dest("B").overloaded
    assert lab.picks(3) == ["B", "B", "B"]  # wlc would pick A now


def test_lblc_cache_hit_honours_its_own_overload_test() -> None:
    lab = Lab("lblc", rs("B", weight=3), rs("A", weight=1))  # list [A, B]
    assert lab.picks(2) == ["A", "A"]  # A: 1 active is not more than weight 1
    # A: 2 active > weight 1, and B (0 active * 2 < 3) is under half load: schedule anew.
    assert lab.pick() == "B"
    assert cached(lab, VIP) == "198.51.100.2"
    assert lab.pick() == "B"


def test_lblc_keeps_its_dest_past_its_weight_while_no_dest_is_under_half_load() -> None:
    lab = cluster(rs("B", weight=1, port=0), rs("A", weight=1, port=0))  # list [A, B]
    assert to(lab, SITE1) == "A"
    assert to(lab, SITE2) == "B"  # wlc: A has one active connection
    # A has 1, 2, 3 active; B has 1: 2 * 1 < 1 is false for both, so A is never "overloaded".
    assert [to(lab, SITE1) for _ in range(3)] == ["A", "A", "A"]
    assert lab.dest("A").activeconns == 4


def test_lblc_half_load_test_is_strict() -> None:
    lab = cluster(rs("B", weight=2, port=0), rs("A", weight=1, port=0))  # list [A, B]
    assert to(lab, SITE1) == "A"
    assert to(lab, SITE2) == "B"  # wlc: 256 * 2 > 0 * 1
    # A goes past its weight, but B holds exactly half its weight (2 * 1 < 2 is false).
    assert [to(lab, SITE1) for _ in range(2)] == ["A", "A"]
    assert lab.dest("A").activeconns == 3


def test_lblc_ignores_a_cached_dest_of_weight_zero_and_replaces_the_entry() -> None:
    lab = Lab("lblc", rs("A"), rs("B"))
    assert lab.pick() == "B"
    lab.edit("B", weight=0)
    assert lab.pick() == "A"
    assert cached(lab, VIP) == "198.51.100.1"
    lab.edit("B", weight=1)
    assert lab.pick() == "A"  # the entry now says A


def test_lblc_ignores_a_cached_dest_that_was_deleted() -> None:
    lab = Lab("lblc", rs("A"), rs("B"))
    assert lab.pick() == "B"
    b = lab.dest("B")
    lab.delete("B")
    assert not b.available
    assert lab.pick() == "A"
    assert cached(lab, VIP) == "198.51.100.1"


def test_lblc_cache_entry_holds_a_deleted_dest_in_the_trash() -> None:
    lab = Lab("lblc", rs("A"), rs("B"))
    conn = lab.open()
    assert conn is not None and str(conn.real_server) == "198.51.100.2"
    lab.sim.disconnect(conn)
    lab.sim.advance(200)  # the connection is gone
    b = lab.dest("B")
    assert b.activeconns == b.inactconns == 0
    lab.delete("B")
    lab.sim.advance(600)  # an unreferenced dest would be freed within 180 s
    assert b in lab.sim.director.trash
    lab.add(rs("B"))
    assert lab.dest("B") is b


def test_lblc_gc_full_sweep_after_30_minutes_deletes_entries_idle_for_lblc_expiration() -> None:
    lab = cluster("A")
    lab.lb.set_sysctls(Sysctls(lblc_expiration=600))
    assert to(lab, SITE1) == "A"  # cached at t = 0
    lab.add(rs("B", port=0))  # list [B, A]: wlc would now pick B (first, both idle later)
    lab.sim.advance(1500)
    conn = lab.open("203.0.113.2", vip=SITE2, mark=MARK)  # cached at t = 1500
    assert conn is not None and str(conn.real_server) == "198.51.100.2"
    lab.sim.disconnect(conn)  # so that both real servers are idle at t = 1800
    lab.sim.advance(1799 - 1500)
    # Only the full sweep removes idle entries: SITE1, idle for 1799 s, is still cached.
    assert cached(lab, SITE1) == "198.51.100.1"
    assert lab.sim.which("203.0.113.3", SITE1, 80, mark=MARK) == "198.51.100.1:80"
    lab.sim.advance(1)  # t = 1800: the 30th GC tick is the first full sweep
    assert cached(lab, SITE1) is None
    assert cached(lab, SITE2) == "198.51.100.2"  # idle 300 s < 600 s
    assert to(lab, SITE1) == "B"


def test_lblc_gc_keeps_entries_younger_than_the_default_expiration() -> None:
    lab = cluster("A")
    lab.lb.set_timeouts(Timeouts(tcp=7200))
    assert to(lab, SITE1) == "A"
    lab.sim.advance(3 * 1800 + 1)
    assert cached(lab, SITE1) == "198.51.100.1"  # 24 h by default


def test_lblc_full_sweep_uses_the_entry_last_use_not_its_creation() -> None:
    lab = cluster("A")
    lab.lb.set_sysctls(Sysctls(lblc_expiration=600))
    assert to(lab, SITE1) == "A"
    lab.sim.advance(1201)
    assert to(lab, SITE1) == "A"  # a hit refreshes lastuse to 1201
    lab.sim.advance(1800 - 1201)
    assert cached(lab, SITE1) == "198.51.100.1"  # 1800 < 1201 + 600: kept at the first sweep
    lab.sim.advance(1800)
    assert cached(lab, SITE1) is None  # the second sweep, at 3600

def test_lblc_with_no_eligible_dest_picks_none_and_caches_nothing() -> None:
    lab = Lab("lblc", rs("A", weight=0))
    assert lab.pick() is None
    assert cached(lab, VIP) is None
