"""twos (ip_vs_twos.c): two weighted random candidates, the less loaded per weight wins.

The kernel draws from its CSPRNG; the simulator from a seeded random source. So these tests check
the rules and the distribution, not individual draws. One-packet UDP keeps every dest's counters at
zero between picks (the connection is bound and freed within its packet), so the pick is the first
candidate and its distribution can be measured directly.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
from _lab import Lab, rs

PICKS = 20_000


def shares(lab: Lab, n: int = PICKS, **options: object) -> Counter[str | None]:
    return Counter(lab.pick(f"203.0.113.{1 + i % 200}", **options) for i in range(n))


def within(count: int, p: float, n: int = PICKS, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_twos_never_picks_weight_zero_or_overloaded() -> None:
    lab = Lab("twos", rs("A", weight=3), rs("B", weight=0), rs("C", weight=5, u_threshold=1), rs("D", weight=2),
              seed=7)
    picks = set(lab.picks(300))
    assert "B" not in picks
    assert lab.dest("C").overloaded
    assert lab.dest("C").activeconns <= 1


def test_twos_single_eligible_dest_is_always_chosen() -> None:
    lab = Lab("twos", rs("A", weight=0), rs("B", weight=9), rs("C", weight=0), seed=3)
    assert set(lab.picks(200)) == {"B"}


def test_twos_with_no_eligible_dest_picks_none() -> None:
    lab = Lab("twos", rs("A", weight=0), rs("B", weight=1, u_threshold=1))
    assert lab.pick() == "B"
    assert lab.pick() is None


@pytest.mark.parametrize("seed", [1, 2020])
def test_twos_candidate_distribution_is_weight_plus_one_for_the_first_over_total_plus_one(seed: int) -> None:
    lab = Lab("twos", rs("A", weight=1), rs("B", weight=2), rs("C", weight=3), protocol="udp", one_packet=True,
              seed=seed)
    assert lab.order() == ["C", "B", "A"]
    got = shares(lab)
    assert lab.sim.director.conns == {}
    assert sum(d.inactconns + d.activeconns for d in lab.svc.dests) == 0
    # r in [0, W] inclusive: the first eligible dest (C) also takes r == 0.
    want = {"C": 4 / 7, "B": 2 / 7, "A": 1 / 7}
    assert all(within(got[name], p) for name, p in want.items()), got
    assert not within(got["C"], 3 / 6)  # the plain weighted share is ruled out


def test_twos_prefers_the_less_loaded_candidate() -> None:
    lab = Lab("twos", rs("A", weight=1), rs("B", weight=1), seed=11)
    picks = lab.picks(400)
    a, b = lab.dest("A").activeconns, lab.dest("B").activeconns
    # Two choices keep open connections far more even than independent random picks would.
    assert picks.count("A") == a and picks.count("B") == b
    assert abs(a - b) <= 4


def test_twos_compares_wrapping_32_bit_products() -> None:
    # A fwmark service carries TCP (to load A) and one-packet UDP (to measure the picks).
    lab = Lab("twos", rs("A", weight=65535, port=0), fwmark=1, one_packet=True, seed=5)
    for i in range(129):
        assert lab.pick(f"203.0.113.{1 + i}", vip="192.0.2.1", mark=1, protocol="tcp") == "A"
    lab.add(rs("B", weight=65535, port=0))  # idle
    assert lab.dest("A").overhead() == 129 << 8
    got = shares(lab, 4000, vip="192.0.2.1", mark=1, protocol="udp")
    # 65535 * 33024 wraps to a negative int. When the two candidates differ, the kernel's
    # "w2 * oh1 > w1 * oh2" then prefers A, the loaded one, either way round: A is picked unless
    # both candidates are B (about 1/4). Exact 64-bit products would pick A only 1/4 of the time.
    assert within(got["A"], 0.75, 4000), got
