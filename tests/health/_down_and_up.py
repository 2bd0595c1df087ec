"""The scenario of the real-server health tests: a target fails just after a passed check, and is
restored once the monitor has taken it down. Shared by the loopback and the ping tests.

These tests run on real sockets and the machine's own clock, so their verdict must not depend on how
busy the machine is: they assert what happened and in which order, with deadlines far beyond what
any load makes of the policy, and only lower bounds on time (load can delay a check, never hurry
it). The exact times (down ``interval * fall + timeout`` after the last passed check) are proved on
the virtual clock, in test_health_monitor_sim.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import attrs

from lbcore import Balancer, SystemClock, VirtualService
from lbcore.health import AsyncioProber, Check, CheckedService, CheckResult, Event, EventKind, Monitor, Policy
from lbcore.sim import SimBackend

#: The policy of the real-socket tests. A check on loopback or a veth answers in a millisecond when
#: the machine is idle; its timeout is 500 times that, so that a healthy target is not taken down
#: on a busy machine, and fall is 2 so that a test still takes about a second and a half.
POLICY = Policy(interval=0.1, timeout=0.5, fall=2, rise=2)
#: How long a test waits for an event it expects (an idle machine needs under 1.5 s).
DEADLINE = 60.0


@attrs.frozen
class DownAndUp:
    """What :func:`down_and_up` saw.

    Attributes:
        to_down: seconds from the passed check after which the target failed, to its down event.
        to_up: seconds from restoring the target to its up event.
        weight_down: the real server's weight while down.
        passed: the details of the passed checks.
        to_down_results: the check results after the failure, up to and with the one that took it down.
        to_up_results: the check results after restoring, up to and with the one that brought it up.
    """

    to_down: float
    to_up: float
    weight_down: int
    passed: list[str]
    to_down_results: list[CheckResult]
    to_up_results: list[CheckResult]


def assert_down_and_up(run: DownAndUp, timeouts: bool = True) -> None:
    """Down at weight 0 after exactly ``fall`` failed checks, none sooner than they can take; up
    again after ``rise`` passed checks in a row.

    The first check after the passed one starts when that one has ended, checks of one real server
    never overlap, and with ``timeouts`` each failed check takes its timeout, so down comes no sooner
    than ``(fall - 1) * max(interval, timeout) + timeout`` after the passed check (without, failures
    may come at once: ``(fall - 1) * interval``). Load only delays it.
    """
    assert run.weight_down == 0
    assert [r.ok for r in run.to_down_results] == [False] * POLICY.fall, run.to_down_results
    if timeouts:
        soonest = (POLICY.fall - 1) * max(POLICY.interval, POLICY.timeout) + POLICY.timeout
    else:
        soonest = (POLICY.fall - 1) * POLICY.interval
    assert run.to_down >= soonest - 0.001, (run.to_down, soonest)
    assert run.to_up >= 0.0
    assert [r.ok for r in run.to_up_results[-POLICY.rise:]] == [True] * POLICY.rise, run.to_up_results


async def wait_until(done: Callable[[], bool], what: str, limit: float = DEADLINE) -> None:
    """Wait until ``done()``, up to ``limit`` s; fail naming ``what`` was awaited."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not done():
        if loop.time() >= deadline:
            raise AssertionError(f"{what}: not within {limit} s")
        await asyncio.sleep(0.005)


async def wait_for(monitor: Monitor, kind: EventKind, after: int, limit: float = DEADLINE) -> Event:
    """The first event of ``kind`` after the first ``after`` events, waiting up to ``limit`` s."""
    def found() -> list[Event]:
        return [event for event in monitor.events[after:] if event.kind is kind]

    await wait_until(lambda: bool(found()), f"a {kind} event after {monitor.events[:after]}: {monitor.events}", limit)
    return found()[0]


async def wait_for_count(monitor: Monitor, count: int, limit: float = DEADLINE) -> list[Event]:
    """The monitor's events once there are ``count`` of them, waiting up to ``limit`` s."""
    await wait_until(lambda: len(monitor.events) >= count, f"{count} events: {monitor.events}", limit)
    return list(monitor.events)


async def wait_for_passes(monitor: Monitor, count: int, limit: float = DEADLINE) -> None:
    """Wait until ``count`` checks have passed from now on (the target answers, as the script assumes)."""
    passed: list[CheckResult] = []
    monitor.on_result(lambda result: passed.append(result) if result.ok else None)
    await wait_until(lambda: len(passed) >= count, f"{count} passed checks", limit)


async def down_and_up(service: VirtualService, check: Check, fail: Callable[[], None],
                      restore: Callable[[], None]) -> DownAndUp:
    """Run the monitor (POLICY) on real sockets against ``service``'s one real server; ``fail`` it just
    after a passed check (0.3 s in), ``restore`` it once it is down."""
    loop = asyncio.get_running_loop()
    prober = AsyncioProber()
    sim = SimBackend(clock=SystemClock())  # the same monotonic time as the loop's
    weight = service.real_servers[0].weight
    monitor = Monitor(Balancer(sim), [CheckedService(service=service, check=check, policy=POLICY)], prober)
    start = loop.time()
    failed_at: list[float] = []
    passed: list[str] = []
    results: list[CheckResult] = []

    def on_result(result: CheckResult) -> None:
        results.append(result)
        if result.ok:
            passed.append(result.detail)
        if result.ok and not failed_at and result.time > start + 0.3:
            fail()
            failed_at.append(result.time)

    monitor.on_result(on_result)
    monitor.start()
    try:
        down = await wait_for(monitor, EventKind.DOWN, 0)
        assert failed_at and down.time > failed_at[0], f"down before the target failed: {results}"
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
    return DownAndUp(
        to_down=down.time - failed_at[0], to_up=up.time - restored_at, weight_down=weight_down, passed=passed,
        to_down_results=[r for r in results if failed_at[0] < r.time <= down.time],
        to_up_results=[r for r in results if restored_at < r.time <= up.time])
