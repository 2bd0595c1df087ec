"""Health check throughput: TCP checks per second one process sustains on one core, and how late they start.

The targets: a helper process (on the other core, when there is one) listens on many ports of
127.0.0.2 to 127.0.0.9 and accepts and closes every connection. lbcore runs one Monitor with an
AsyncioProber and N TCP checks, one per listening port, each every INTERVAL seconds: the offered
rate is N / INTERVAL checks/s. The baseline is the same checks written the naive way: one thread per
check, each sleeping until its next start, connecting with a blocking socket and closing it. Both
schedule start to start (the next check is due an interval after this one really started), and
both run pinned to the same one core (os.sched_setaffinity), one after the other.

Printed, for each offered rate and for both: checks completed per second, the p99 and worst lag of a
check's start behind its schedule (lbcore: when its connect really begins, in the task), CPU
seconds per 1,000 checks, and failed checks; then the ratios lbcore / baseline. The target is
>= 2,000 checks/s with p99 lag <= 100 ms. Absolute figures vary by machine; the ratios are the result.

Usage: python benchmarks/bench_health.py [--rates 1000,2000,4000,8000] [--seconds 8] [--warmup 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from lbcore import Balancer, RealServer, SystemClock, VirtualService
from lbcore.health import AsyncioProber, CheckedService, Monitor, Policy, TCPCheck
from lbcore.sim import SimBackend

ADDRESSES = [f"127.0.0.{n}" for n in range(2, 10)]
INTERVAL = 1.0
TIMEOUT = 1.0
PER_SERVICE = 50  # real servers per virtual service

# The targets: listen on `count` ports spread over ADDRESSES, print them, accept and close forever.
LISTENERS = """
import selectors, socket, sys
addresses, count = sys.argv[1].split(","), int(sys.argv[2])
sel = selectors.DefaultSelector()
for i in range(count):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((addresses[i % len(addresses)], 0))
    sock.listen(256)
    sock.setblocking(False)
    sel.register(sock, selectors.EVENT_READ)
    print("%s %d" % sock.getsockname(), flush=True)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        try:
            while True:
                key.fileobj.accept()[0].close()
        except BlockingIOError:
            pass
"""


def start_targets(count: int, cpu: int | None) -> tuple[subprocess.Popen[str], list[tuple[str, int]]]:
    """Start the listeners; their (address, port)s."""
    preexec = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    proc = subprocess.Popen([sys.executable, "-c", LISTENERS, ",".join(ADDRESSES), str(count)],
                            stdout=subprocess.PIPE, text=True, preexec_fn=preexec)
    assert proc.stdout is not None
    targets = []
    for line in proc.stdout:
        if line.strip() == "ready":
            break
        address, port = line.split()
        targets.append((address, int(port)))
    return proc, targets


class Tally:
    """Lags of check starts behind schedule, and outcomes, counted only inside the measured window."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.lags: list[float] = []
        self.ok = 0
        self.failed = 0

    def started(self, due: float, now: float) -> None:
        if self.start <= due < self.end:
            self.lags.append(now - due)

    def finished(self, now: float, ok: bool) -> None:
        if self.start <= now < self.end:
            if ok:
                self.ok += 1
            else:
                self.failed += 1


class TimedProber(AsyncioProber):
    """An AsyncioProber that notes when each TCP connect really begins, against when it was due."""

    def __init__(self, tally: Tally) -> None:
        super().__init__()
        self.tally = tally
        self._due: dict[tuple[Any, int], float] = {}
        self._next_due = 0.0

    def call_at(self, when: float, callback: Any) -> Any:
        def fire() -> None:
            self._next_due = when  # the monitor starts the probe from inside this callback
            callback()

        return super().call_at(when, fire)

    def probe(self, probe: Any, done: Any) -> None:
        self._due[(probe.address, probe.port)] = self._next_due

        def finished(ok: bool, detail: str) -> None:
            self.tally.finished(self.loop.time(), ok)
            done(ok, detail)

        super().probe(probe, finished)

    async def _tcp(self, address: Any, port: int) -> str:
        self.tally.started(self._due.pop((address, port)), self.loop.time())
        return await super()._tcp(address, port)


def lbcore_run(targets: list[tuple[str, int]], seconds: float, warmup: float) -> tuple[Tally, float]:
    """Run the monitor over ``targets``; the tally and the CPU seconds of the measured window."""
    services = []
    policy = Policy(interval=INTERVAL, timeout=TIMEOUT, jitter=INTERVAL)  # first checks spread over an interval
    for k in range(0, len(targets), PER_SERVICE):
        chunk = targets[k:k + PER_SERVICE]
        services.append(CheckedService(
            service=VirtualService(protocol="tcp", address="192.0.2.1", port=1 + k // PER_SERVICE, scheduler="rr",
                                   real_servers=[RealServer(a, p, forward="nat") for a, p in chunk]),
            check=TCPCheck(), policy=policy))

    async def main() -> tuple[Tally, float]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        tally = Tally(now + warmup, now + warmup + seconds)
        prober = TimedProber(tally)
        monitor = Monitor(Balancer(SimBackend(clock=SystemClock())), services, prober)
        monitor.start()
        await asyncio.sleep(warmup)
        cpu = time.process_time()
        await asyncio.sleep(seconds)
        cpu = time.process_time() - cpu
        monitor.stop()
        prober.close()
        await asyncio.sleep(TIMEOUT)  # let cancelled attempts unwind
        assert not [e for e in monitor.events if e.kind.value != "up"], monitor.events[:3]
        return tally, cpu

    return asyncio.run(main())


def naive_run(targets: list[tuple[str, int]], seconds: float, warmup: float) -> tuple[Tally, float]:
    """One thread per check, blocking sockets; the tally and the CPU seconds of the measured window."""
    start = time.monotonic()
    tally = Tally(start + warmup, start + warmup + seconds)
    stop_at = start + warmup + seconds
    lock = threading.Lock()

    def worker(first: float, address: str, port: int) -> None:
        due = first
        while due < stop_at:
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            began = time.monotonic()
            try:
                socket.create_connection((address, port), timeout=TIMEOUT).close()
                ok = True
            except OSError:
                ok = False
            now = time.monotonic()
            with lock:
                tally.started(due, began)
                tally.finished(now, ok)
            due = max(began + INTERVAL, now)

    threading.stack_size(256 * 1024)
    n = len(targets)
    threads = [threading.Thread(target=worker, args=(start + INTERVAL * i / n, a, p), daemon=True)
               for i, (a, p) in enumerate(targets)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, start + warmup - time.monotonic()))
    cpu = time.process_time()
    time.sleep(max(0.0, stop_at - time.monotonic()))
    cpu = time.process_time() - cpu
    for thread in threads:
        thread.join()
    return tally, cpu


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def row(name: str, tally: Tally, cpu: float, seconds: float) -> tuple[float, float, float]:
    rate = tally.ok / seconds
    p99 = p(tally.lags, 0.99) * 1000
    worst = max(tally.lags, default=float("nan")) * 1000
    per_k = cpu / max(1, tally.ok + tally.failed) * 1000
    print(f"  {name:<9}{rate:>10,.0f}{p99:>11.1f}{worst:>11.1f}{per_k:>13.3f}{tally.failed:>8}")
    return rate, p99, per_k


def main() -> None:
    parser = argparse.ArgumentParser(description="lbcore health check throughput (ratios vs one thread per check)")
    parser.add_argument("--rates", default="1000,2000,4000,8000", help="offered checks/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    mine = cpus[0]
    other = cpus[1] if len(cpus) > 1 else None
    os.sched_setaffinity(0, {mine})
    rates = [int(r) for r in args.rates.split(",")]
    targets_proc, targets = start_targets(max(rates) * int(INTERVAL), other)
    print(f"checks: TCP connect to loopback listeners, every {INTERVAL:.0f} s, timeout {TIMEOUT:.0f} s; "
          f"this process on CPU {mine}, listeners on CPU {other if other is not None else mine}")
    print(f"{'offered/s':<11}{'checks/s':>10}{'p99 lag ms':>11}{'max lag ms':>11}{'CPU s/1000':>13}{'failed':>8}")
    summary = []
    try:
        for rate in rates:
            chosen = targets[:int(rate * INTERVAL)]
            print(f"{rate:<11,}")
            ours = row("lbcore", *lbcore_run(chosen, args.seconds, args.warmup), args.seconds)
            time.sleep(1.0)
            theirs = row("threads", *naive_run(chosen, args.seconds, args.warmup), args.seconds)
            time.sleep(1.0)
            summary.append((rate, ours, theirs))
    finally:
        targets_proc.kill()
        targets_proc.wait()
    print("ratios lbcore / threads (checks/s: higher is better; p99 lag and CPU per check: lower is better)")
    print(f"{'offered/s':<11}{'checks/s':>10}{'p99 lag':>11}{'CPU/check':>13}")
    for rate, (r1, l1, c1), (r2, l2, c2) in summary:
        print(f"{rate:<11,}{r1 / r2:>9.2f}x{l1 / l2 if l2 else float('nan'):>10.2f}x{c1 / c2:>12.2f}x")
    met = [rate for rate, (r1, l1, _), _ in summary if r1 >= 0.98 * rate and l1 <= 100.0]
    print(f"lbcore sustains {max(met) if met else 0:,} checks/s with p99 lag <= 100 ms (target 2,000)")


if __name__ == "__main__":
    main()
