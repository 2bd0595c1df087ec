"""The scenario of the real-server health tests: a target fails just after a passed check, and is
restored once the monitor has taken it down. Shared by the loopback and the ping tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from lbcore import Balancer, SystemClock, VirtualService
from lbcore.health import AsyncioProber, Check, CheckedService, CheckResult, Event, EventKind, Monitor, Policy
from lbcore.sim import SimBackend

#: The policy of the timing tests: fast, so that a test takes about a second.
POLICY = Policy(interval=0.1, timeout=0.05, fall=3, rise=2)
#: When a target that stops answering right after a passed check is down: interval x fall + timeout.
EXPECTED_DOWN = POLICY.interval * POLICY.fall + POLICY.timeout


def assert_timing(to_down: float, to_up: float, weight_down: int, early: float = 0.0) -> None:
    """Down at weight 0 within 10% of EXPECTED_DOWN (or up to ``early`` s sooner), up again after
    rise successes: the first check after the restore, then one more, an interval later."""
    assert weight_down == 0
    assert EXPECTED_DOWN * 0.9 - early <= to_down <= EXPECTED_DOWN * 1.1, to_down
    assert POLICY.interval * (POLICY.rise - 1) <= to_up <= POLICY.interval * POLICY.rise + 0.05, to_up


async def wait_for(monitor: Monitor, kind: EventKind, after: int, limit: float = 3.0) -> Event:
    """The first event of ``kind`` after the first ``after`` events, waiting up to ``limit`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        for event in monitor.events[after:]:
            if event.kind is kind:
                return event
        await asyncio.sleep(0.005)
    raise AssertionError(f"no {kind} event within {limit} s: {monitor.events}")


async def down_and_up(service: VirtualService, check: Check, fail: Callable[[], None],
                      restore: Callable[[], None]) -> tuple[float, float, int, list[str]]:
    """Run the monitor (POLICY) on real sockets against ``service``'s one real server; ``fail`` it just
    after a passed check (0.3 s in), ``restore`` it once it is down.

    Returns:
        Seconds from the passed check to down, from restoring to up, the weight while down, and
        the details of the passed checks.
    """
    loop = asyncio.get_running_loop()
    prober = AsyncioProber()
    sim = SimBackend(clock=SystemClock())  # the same monotonic time as the loop's
    weight = service.real_servers[0].weight
    monitor = Monitor(Balancer(sim), [CheckedService(service=service, check=check, policy=POLICY)], prober)
    start = loop.time()
    failed_at: list[float] = []
    passed: list[str] = []

    def on_result(result: CheckResult) -> None:
        assert result.ok or failed_at, f"a check failed before the target did: {result.detail}"
        if result.ok:
            passed.append(result.detail)
        if result.ok and not failed_at and result.time > start + 0.3:
            fail()
            failed_at.append(result.time)

    monitor.on_result(on_result)
    monitor.start()
    try:
        down = await wait_for(monitor, EventKind.DOWN, 0)
        held = sim.read().get(service.key)
        assert held is not None
        weight_down = held.real_servers[0].weight
        restore()
        restored_at = loop.time()
        up = await wait_for(monitor, EventKind.UP, len(monitor.events))
        held = sim.read().get(service.key)
        assert held is not None and held.real_servers[0].weight == weight
    finally:
        monitor.stop()
        prober.close()
    return down.time - failed_at[0], up.time - restored_at, weight_down, passed
