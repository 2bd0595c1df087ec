"""mh (ip_vs_mh.c): Maglev hashing into 4093 slots with fixed hsiphash keys, using last_weight.

The worked examples of ipvs-notes.md (Appendix A) use 10.0.0.1-3:80 as real servers and
192.168.1.x / 10.1.1.1 as clients; they are kept here so the numbers can be checked by eye.
"""

from __future__ import annotations

import ipaddress
from collections import Counter

import attrs
import pytest
from _lab import Lab, letter, rs

from lbcore.sim.schedulers._hash import hsiphash

M = 4093
HASH1 = (2654435761, 2654435761)
HASH2 = (2654446892, 2654446892)


def mhkey(addr: str, port: int, key: tuple[int, int], offset: int = 0) -> int:
    """ip_vs_mh_hashkey() for IPv4, written from the notes: hsiphash of the u32 sum, little-endian."""
    v = (offset + port + int(ipaddress.ip_address(addr))) & 0xFFFFFFFF
    return hsiphash(v.to_bytes(4, "little"), *key)


def three() -> Lab:
    return Lab("mh", rs("10.0.0.1"), rs("10.0.0.2"), rs("10.0.0.3"))


def slot_counts(lab: Lab) -> dict[str | None, int]:
    return dict(Counter(letter(d.address) if d is not None else None for d in lab.scheduler.lookup))


@pytest.mark.parametrize(("dest", "offset", "skip"), [
    ("10.0.0.1", 3167, 700), ("10.0.0.2", 1231, 3544), ("10.0.0.3", 1631, 3453),
])
def test_mh_permutation_offset_and_skip_of_a_dest(dest: str, offset: int, skip: int) -> None:
    assert mhkey(dest, 80, HASH1) % M == offset
    assert mhkey(dest, 80, HASH2) % (M - 1) + 1 == skip
    lab = Lab("mh", rs(dest))
    assert lab.scheduler.lookup[offset].address == ipaddress.ip_address(dest)  # its first slot


def test_mh_three_equal_dests_share_the_slots_1365_1364_1364() -> None:
    lab = three()
    assert lab.order() == ["10.0.0.3", "10.0.0.2", "10.0.0.1"]
    assert slot_counts(lab) == {"10.0.0.3": 1365, "10.0.0.2": 1364, "10.0.0.1": 1364}


@pytest.mark.parametrize(("client", "slot", "dest"), [
    ("192.168.1.100", 1341, "10.0.0.2"), ("192.168.1.101", 881, "10.0.0.3"), ("10.1.1.1", 3744, "10.0.0.3"),
])
def test_mh_client_maps_to_the_worked_example_dest(client: str, slot: int, dest: str) -> None:
    assert mhkey(client, 0, HASH1) % M == slot
    lab = three()
    assert lab.pick(client) == dest
    assert lab.pick(client) == dest  # no state: the same slot every time


def test_mh_client_raw_hash_of_the_worked_example() -> None:
    assert mhkey("192.168.1.100", 0, HASH1) == 3244109048


def test_mh_weights_1_and_3_give_1024_and_3069_slots() -> None:
    lab = Lab("mh", rs("10.0.0.1", weight=3), rs("10.0.0.2", weight=1))
    assert slot_counts(lab) == {"10.0.0.2": 1024, "10.0.0.1": 3069}


def test_mh_large_weights_are_shifted_100_and_1_give_4013_and_80_slots() -> None:
    # gcd 1, max 100 needs 7 bits: rshift 1, so turns are 50 : 1.
    lab = Lab("mh", rs("10.0.0.1", weight=1), rs("10.0.0.2", weight=100))
    assert slot_counts(lab) == {"10.0.0.2": 4013, "10.0.0.1": 80}


def test_mh_gcd_reduces_the_weights() -> None:
    lab = Lab("mh", rs("10.0.0.1", weight=30), rs("10.0.0.2", weight=10))
    assert slot_counts(lab) == {"10.0.0.2": 1024, "10.0.0.1": 3069}  # the same as 3 : 1


def test_mh_weight_zero_keeps_the_slots_and_gives_no_dest() -> None:
    lab = three()
    before = list(lab.scheduler.lookup)
    lab.edit("10.0.0.2", weight=0)  # upd_dest rebuilds, but from last_weight (still 1)
    assert lab.dest("10.0.0.2").last_weight == 1
    assert lab.scheduler.lookup == before
    assert lab.pick("192.168.1.100") is None
    assert lab.pick("192.168.1.101") == "10.0.0.3"


def test_mh_weight_zero_keeps_its_share_of_a_weighted_table() -> None:
    lab = Lab("mh", rs("10.0.0.1", weight=3), rs("10.0.0.2", weight=1))
    lab.edit("10.0.0.1", weight=0)
    assert slot_counts(lab) == {"10.0.0.2": 1024, "10.0.0.1": 3069}


def test_mh_gcd_of_a_quiesced_table_still_comes_from_last_weight() -> None:
    lab = Lab("mh", rs("10.0.0.1", weight=6), rs("10.0.0.2", weight=3))
    assert slot_counts(lab) == {"10.0.0.2": 1365, "10.0.0.1": 2728}  # gcd 3: turns 1 : 2
    lab.edit("10.0.0.2", weight=0)  # gcd over the current weights would be 6, and turns 1 : 1
    assert slot_counts(lab) == {"10.0.0.2": 1365, "10.0.0.1": 2728}


def test_mh_fallback_rehashes_each_probe() -> None:
    lab = Lab("mh", rs("10.0.0.1"), rs("10.0.0.2"), rs("10.0.0.3"), flags=["mh-fallback"])
    lab.edit("10.0.0.2", weight=0)
    lookup = lab.scheduler.lookup
    client = "203.0.113.9"
    h = mhkey(client, 0, HASH1) % M
    assert letter(lookup[h].address) == "10.0.0.2"
    probes = (lookup[mhkey(client, 0, HASH1, (k + h) % M) % M] for k in range(M))
    want = next(letter(d.address) for d in probes if d.weight > 0)
    linear = next(letter(lookup[(h + k) % M].address) for k in range(1, M) if lookup[(h + k) % M].weight > 0)
    assert (want, linear) == ("10.0.0.3", "10.0.0.1")  # the client tells the two probes apart
    assert lab.pick(client) == want


def test_mh_fallback_passes_an_overloaded_slot() -> None:
    lab = Lab("mh", rs("10.0.0.1"), rs("10.0.0.2", u_threshold=1), rs("10.0.0.3"), flags=["mh-fallback"])
    assert lab.pick("203.0.113.9") == "10.0.0.2"
    assert lab.dest("10.0.0.2").overloaded
    assert lab.pick("203.0.113.9") == "10.0.0.3"


def test_mh_without_fallback_an_overloaded_slot_gives_no_dest() -> None:
    lab = Lab("mh", rs("10.0.0.1"), rs("10.0.0.2", u_threshold=1), rs("10.0.0.3"))
    assert lab.pick("192.168.1.100") == "10.0.0.2"
    assert lab.pick("192.168.1.100") is None


def test_mh_dest_added_with_weight_zero_takes_no_slots() -> None:
    lab = three()
    before = list(lab.scheduler.lookup)
    lab.add(rs("10.0.0.4", weight=0))
    assert lab.dest("10.0.0.4").last_weight == 0
    assert lab.scheduler.lookup == before


def test_mh_all_weights_zero_from_the_start_gives_no_dest() -> None:
    lab = Lab("mh", rs("10.0.0.1", weight=0), rs("10.0.0.2", weight=0))
    assert set(lab.scheduler.lookup) == {None}
    assert lab.pick("192.168.1.100") is None


def test_mh_port_flag_hashes_the_client_source_port() -> None:
    lab = Lab("mh", rs("10.0.0.1"), rs("10.0.0.2"), rs("10.0.0.3"), flags=["mh-port"])
    lookup = lab.scheduler.lookup
    for port in (40000, 40001, 40002, 50000):
        want = letter(lookup[mhkey("192.168.1.100", port, HASH1) % M].address)
        assert lab.pick("192.168.1.100", client_port=port) == want
    assert lab.pick("192.168.1.100", client_port=40000) == "10.0.0.3"  # without the flag: 10.0.0.2


def test_mh_delete_and_edit_rebuild_the_table() -> None:
    lab = three()
    lab.delete("10.0.0.3")
    assert slot_counts(lab) == {"10.0.0.2": 2047, "10.0.0.1": 2046}
    lab.edit("10.0.0.1", weight=3)
    assert slot_counts(lab)["10.0.0.1"] > 3000


def test_mh_service_edit_with_the_same_scheduler_keeps_the_table() -> None:
    lab = three()
    table = lab.scheduler.lookup
    lab.lb.edit_service(attrs.evolve(lab.service, flags=["mh-fallback"]))
    assert lab.scheduler.lookup is table
