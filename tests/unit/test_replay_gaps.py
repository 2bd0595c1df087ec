"""Replay costs what its events cost, not the simulated time between them, with the same answers.

The simulator runs the estimator's idle ticks as one step (Director.skip_idle); these tests compare
it with the tick-by-tick walk on random traces with idle gaps, answer by answer and listing by listing.
"""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbcore.clock import VirtualClock
from lbcore.errors import ParseError
from lbcore.formats.trace import Event, parse_trace, replay
from lbcore.sim import SimBackend
from lbcore.testing.traces import TraceSpec, random_trace

ONE_YEAR = 365 * 24 * 3600


def with_gaps(text: str, seed: int, gap: float, every: int) -> str:
    """``text`` with an idle gap of up to ``gap`` seconds after about every ``every``-th event."""
    rng = random.Random(seed)
    shift, lines = 0.0, []
    for line in text.splitlines():
        words = line.split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        if rng.randrange(every) == 0:
            shift += rng.choice([gap, rng.uniform(0, gap), float(rng.randrange(int(gap) + 1))])
        lines.append(f"{float(words[0]) + shift!r} {words[1]}")
    return "\n".join(lines) + "\n"


def run(events: list[Event], skip_idle: bool, start: float = 0.0) -> list[str]:
    """Every answer, and the stats/rate listing and connection listing after each event."""
    backend = SimBackend(clock=VirtualClock(start), seed=1)
    backend.director.skip_idle = skip_idle
    replayer = backend.replayer()
    seen = []
    for event in events:
        seen.extend(replay([event], replayer))
        seen.append(backend.status(stats=True))
        seen.append(backend.status(rate=True))
        seen.append(backend.connections(persistent_conn=True))
    return seen


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10**6), scheduler=st.sampled_from(["wlc", "rr", "sh", "lblc"]),
       gap=st.sampled_from([3.0, 61.0, 400.0, 2000.0]), start=st.sampled_from([0.0, 0.1, 1.75, 1e6 + 0.3]),
       persistence=st.sampled_from([0, 5]))
def test_skipping_idle_ticks_gives_the_walks_answers(seed: int, scheduler: str, gap: float, start: float,
                                                     persistence: int) -> None:
    text = random_trace(TraceSpec(scheduler=scheduler, connections=25, persistence=persistence, sysctls=True,
                                  tcpfin=7, step=0.7, seed=seed))
    events = parse_trace(with_gaps(text, seed, gap, every=4))
    assert run(events, skip_idle=True, start=start) == run(events, skip_idle=False, start=start)


def trace_with_gap(gap: float) -> str:
    return (f"0 rules -A -t 10.0.0.1:80 -s wlc -p 30\n"
            f"0 rules -a -t 10.0.0.1:80 -r 10.0.1.1:80 -m\n"
            f"0 rules -a -t 10.0.0.1:80 -r 10.0.1.2:80 -m\n"
            f"1 open a tcp 192.0.2.1:1000 10.0.0.1:80\n"
            f"2 open b tcp 192.0.2.2:1000 10.0.0.1:80\n"
            f"{2 + gap!r} open c tcp 192.0.2.1:1001 10.0.0.1:80\n"
            f"{2 + gap!r} open d tcp 192.0.2.3:1000 10.0.0.1:80\n")


def replay_timed(text: str) -> tuple[list[str], str, float]:
    backend = SimBackend()
    began = time.process_time()
    lines = replay(parse_trace(text), backend.replayer())
    return lines, backend.status(stats=True, rate=True), time.process_time() - began


def test_replay_one_year_gap_is_fast() -> None:
    year_lines, year_status, year_cost = replay_timed(trace_with_gap(ONE_YEAR))
    second_lines, _, _ = replay_timed(trace_with_gap(1.0))
    assert year_cost < 10.0  # the walk took 2 CPU-minutes or more: 15.8 million estimator ticks
    # After a year every entry and template has expired: c is scheduled afresh, as after a long gap.
    assert year_lines[:2] == second_lines[:2] and len(year_lines) == 4
    # The same answers as a 10-minute gap, which the walk covers tick by tick.
    backend = SimBackend()
    backend.director.skip_idle = False
    assert year_lines == replay(parse_trace(trace_with_gap(600.0)), backend.replayer())
    assert "10.0.1.1:80" in year_status


@pytest.mark.parametrize("gap", [1e7, 1e8, 1e12])
def test_replay_huge_times_end(gap: float) -> None:
    lines, _, cost = replay_timed(trace_with_gap(gap))
    assert len(lines) == 4 and cost < 10.0


@pytest.mark.parametrize("time_text", ["inf", "nan", "-5", "\uff11", "1e400", "2e12", "+1", "0x10", "1_0"])
def test_replay_time_inf_is_refused(time_text: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_trace(f"0 close a\n{time_text} close b\n", "t.trace")
    assert (caught.value.field, caught.value.value, caught.value.line, caught.value.column) == \
        ("time", time_text, 2, 1)


def test_replay_time_going_back_is_refused() -> None:
    with pytest.raises(ParseError) as caught:
        parse_trace("5 close a\n  4.5 close b\n")
    assert (caught.value.line, caught.value.column) == (2, 3) and "before" in caught.value.reason
