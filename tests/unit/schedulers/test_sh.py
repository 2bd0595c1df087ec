"""sh (ip_vs_sh.c): 256 buckets, a dest of weight w owns w in a row; keyed by the client address.

Most tests build a table in which one dest owns exactly one bucket, so that the dest a client
reaches says which bucket the kernel's hash put it in.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs
import pytest
from _lab import Lab, rs


def only_b_owns(bucket: int, **service: Any) -> Lab:
    """List [A, B, C]: A owns buckets 0..bucket-1, B owns ``bucket`` alone, C the rest."""
    assert 1 <= bucket <= 254
    return Lab("sh", rs("C", weight=255 - bucket), rs("B", weight=1), rs("A", weight=bucket), **service)


def test_sh_layout_gives_each_dest_weight_buckets_in_list_order() -> None:
    lab = only_b_owns(39)
    assert lab.order() == ["A", "B", "C"]
    table = [d.address for d in lab.scheduler.buckets]
    a, b, c = (lab.dest(n).address for n in "ABC")
    assert table == [a] * 39 + [b] + [c] * 216


@pytest.mark.parametrize(("client", "bucket"), [("10.0.0.1", 39), ("10.0.0.2", 137), ("192.168.1.100", 89)])
def test_sh_client_bucket_matches_the_worked_examples(client: str, bucket: int) -> None:
    lab = only_b_owns(bucket)
    assert lab.pick(client) == "B"
    assert lab.picks(2, client) == ["B", "B"]  # the source port does not matter without sh-port


def test_sh_neighbouring_buckets_belong_to_other_dests() -> None:
    assert only_b_owns(40).pick("10.0.0.1") == "A"
    assert only_b_owns(38).pick("10.0.0.1") == "C"


def test_sh_port_flag_adds_the_client_source_port() -> None:
    lab = only_b_owns(253, flags=["sh-port"])
    assert lab.pick("192.168.1.100", client_port=40000) == "B"
    assert lab.pick("192.168.1.100", client_port=40001) != "B"
    assert only_b_owns(89, flags=["sh-port"]).pick("192.168.1.100", client_port=40000) != "B"


def test_sh_ipv6_client_is_folded_by_xor_of_its_words() -> None:
    v6 = [ipaddress.ip_address(f"2001:db8:1::{i}") for i in (3, 2, 1)]
    bucket = 63  # 2001:db8::1 folds to 0x20010db9
    lab = Lab("sh", rs(str(v6[0]), weight=255 - bucket), rs(str(v6[1]), weight=1), rs(str(v6[2]), weight=bucket),
              address="2001:db8::80")
    conn = lab.open("2001:db8::1", vip="2001:db8::80")
    assert conn is not None and conn.real_server == v6[1]


def test_sh_weight_zero_dest_owns_one_bucket_and_gives_no_dest() -> None:
    lab = Lab("sh", rs("C", weight=216), rs("B", weight=0), rs("A", weight=39))
    assert [d.address for d in lab.scheduler.buckets].count(lab.dest("B").address) == 1
    assert lab.pick("10.0.0.1") is None
    assert lab.pick("10.0.0.2") == "C"


def test_sh_later_dests_lose_their_buckets_past_256() -> None:
    lab = Lab("sh", rs("A", weight=10), rs("B", weight=250))
    assert lab.order() == ["B", "A"]
    owners = [d.address for d in lab.scheduler.buckets]
    assert owners.count(lab.dest("B").address) == 250 and owners.count(lab.dest("A").address) == 6
    lab.edit("B", weight=300)  # upd_dest rebuilds: B fills all 256, A is never reached
    assert {lab.pick(f"203.0.113.{i}") for i in range(1, 60)} == {"B"}


def test_sh_edit_rebuilds_the_table() -> None:
    lab = only_b_owns(39)
    lab.edit("A", weight=38)  # A 0..37, B 38, C from 39
    assert lab.pick("10.0.0.1") == "C"


def test_sh_overloaded_bucket_gives_no_dest_without_fallback() -> None:
    lab = Lab("sh", rs("C", weight=178), rs("B", weight=38), rs("A", weight=40, u_threshold=1))
    assert lab.pick("10.0.0.1") == "A"
    assert lab.dest("A").overloaded
    assert lab.pick("10.0.0.1") is None


def test_sh_fallback_probe_starts_at_twice_the_hash() -> None:
    # A owns 0..39, B 40..77, C 78..255. 10.0.0.1 hashes to 39 (A). With A overloaded the
    # fallback probes key(addr, (k + h) % 256) = (2h + k) % 256: bucket 78 (C), not 40 (B).
    lab = Lab("sh", rs("C", weight=178), rs("B", weight=38), rs("A", weight=40, u_threshold=1),
              flags=["sh-fallback"])
    assert lab.pick("10.0.0.1") == "A"
    assert lab.pick("10.0.0.1") == "C"


def test_sh_fallback_also_passes_a_weight_zero_bucket() -> None:
    # A 0..38, B (weight 0) 39 alone, D 40..77, C 78..255.
    lab = Lab("sh", rs("C", weight=178), rs("D", weight=38), rs("B", weight=0), rs("A", weight=39),
              flags=["sh-fallback"])
    assert lab.order() == ["A", "B", "D", "C"]
    assert lab.pick("10.0.0.1") == "C"
    lab.lb.edit_service(attrs.evolve(lab.service, flags=()))  # same scheduler: the table stays
    assert lab.pick("10.0.0.1") is None


def test_sh_with_no_dests_picks_none() -> None:
    lab = Lab("sh", rs("A"), flags=["sh-fallback"])
    lab.delete("A")
    assert lab.pick() is None
