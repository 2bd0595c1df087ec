"""dh (ip_vs_dh.c): 256 buckets filled round robin over the list, keyed by the packet's destination."""

from __future__ import annotations

import ipaddress

from _lab import VIP, Lab, rs


def bucket(address: str) -> int:
    """hash_32(fold(addr), 8) (include/linux/hash.h, GOLDEN_RATIO_32), written out independently."""
    return ((int(ipaddress.ip_address(address)) * 0x61C88647) & 0xFFFFFFFF) >> 24


def test_dh_bucket_of_the_vip() -> None:
    assert bucket(VIP) == 50  # 50 % 3 == 2: the third dest of a three-dest list


def test_dh_sends_every_client_of_a_vip_to_the_same_dest() -> None:
    lab = Lab("dh", rs("A"), rs("B"), rs("C"))
    assert lab.order() == ["C", "B", "A"]
    clients = ["203.0.113.1", "203.0.113.2", "203.0.113.77", "198.51.100.200", "192.0.2.99"]
    assert [lab.pick(c) for c in clients] == ["A"] * 5


def test_dh_ignores_weights_and_load() -> None:
    lab = Lab("dh", rs("A", weight=1), rs("B", weight=100), rs("C", weight=100))
    assert lab.picks(4) == ["A"] * 4
    assert lab.dest("A").activeconns == 4


def test_dh_weight_zero_on_the_vips_dest_gives_no_dest_and_no_fallback() -> None:
    lab = Lab("dh", rs("A"), rs("B"), rs("C"))
    lab.edit("A", weight=0)
    assert lab.pick() is None
    lab.edit("A", weight=1)
    assert lab.pick() == "A"


def test_dh_overloaded_dest_gives_no_dest() -> None:
    lab = Lab("dh", rs("A", u_threshold=2), rs("B"), rs("C"))
    assert lab.picks(3) == ["A", "A", None]


def test_dh_weight_zero_dest_still_takes_buckets() -> None:
    lab = Lab("dh", rs("A"), rs("B"), rs("C"))
    lab.add(rs("D", weight=0))
    assert lab.order() == ["D", "C", "B", "A"]
    assert lab.pick() == "B"  # bucket 50 % 4 == 2


def test_dh_delete_rebuilds_the_table() -> None:
    lab = Lab("dh", rs("A"), rs("B"), rs("C"))
    lab.delete("C")
    assert lab.pick() == "B"  # [B, A]: 50 % 2 == 0


def test_dh_fwmark_service_spreads_by_destination_address() -> None:
    lab = Lab("dh", rs("A", port=0), rs("B", port=0), rs("C", port=0), fwmark=7)
    order = lab.order()
    for daddr in ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.10"]:
        want = order[bucket(daddr) % 3]
        assert lab.pick("203.0.113.9", vip=daddr, mark=7) == want, daddr
        assert lab.pick("203.0.113.10", vip=daddr, mark=7) == want, daddr


def test_dh_with_no_dests_picks_none() -> None:
    lab = Lab("dh", rs("A"))
    lab.delete("A")
    assert lab.pick() is None
