"""Simulator speed and memory, as ratios against a SimPy model of the same workload run alongside.

The workload: clients open TCP connections through one NAT virtual service with 8 real servers at
a steady rate; each lives ``HOLD`` virtual seconds, then the client closes it. lbcore processes
every packet the director sees (SYN, SYN+ACK, ACK; FIN, ACK, FIN, ACK) plus each expiry: those are
its *events*. The baseline is the same workload as a plain SimPy model (a process per connection,
a dict of live connections, a round-robin pick), the way one would write it without lbcore.

Prints, for each scheduler: lbcore events/s, connections/s, and the ratio of lbcore's
connections/s to SimPy's; then bytes per live connection for both and their ratio. Absolute
figures vary by machine; the ratios are the result.

Usage: python benchmarks/bench_sim.py [--connections N] [--live N]
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import time
import tracemalloc

import simpy

from lbcore import Balancer, RealServer, VirtualService
from lbcore.sim import SimBackend

VIP = ipaddress.ip_address("192.0.2.1")
REAL_SERVERS = [f"198.51.100.{n}" for n in range(1, 9)]
HOLD = 30.0  # seconds a connection stays open
RATE = 1000.0  # new connections per virtual second


def clients(n: int) -> list[ipaddress.IPv4Address]:
    return [ipaddress.IPv4Address(0xCB007100 + 0x10000 * (i // 60000) + i % 60000) for i in range(n)]


def lbcore_run(scheduler: str, n: int) -> tuple[float, int]:
    """Seconds taken and events processed for ``n`` connections through the simulator."""
    sim = SimBackend()
    Balancer(sim).add_service(VirtualService(
        protocol="tcp", address=VIP, port=80, scheduler=scheduler,
        real_servers=[RealServer(rs, 80, forward="nat") for rs in REAL_SERVERS]))
    addrs = clients(4096)
    closing: list = []
    start = time.perf_counter()
    for i in range(n):
        sim.run_until(i / RATE)
        conn = sim.connect(addrs[i % 4096], VIP, 80, client_port=1024 + (i // 4096) % 60000)
        closing.append(conn)
        if i >= HOLD * RATE:
            sim.disconnect(closing[i - int(HOLD * RATE)])
    sim.run_until(n / RATE + 1000)  # every entry expires
    elapsed = time.perf_counter() - start
    closed = n - int(HOLD * RATE)
    events = 3 * n + 4 * closed + n  # packets through the director, and one expiry each
    return elapsed, events


def simpy_run(n: int) -> float:
    """Seconds the SimPy model takes for the same ``n`` connections."""
    env = simpy.Environment()
    live: dict[tuple[object, int], str] = {}
    counts = dict.fromkeys(REAL_SERVERS, 0)
    addrs = clients(4096)
    cursor = [0]

    def connection(i: int):  # type: ignore[no-untyped-def]
        key = (addrs[i % 4096], 1024 + (i // 4096) % 60000)
        rs = REAL_SERVERS[cursor[0]]
        cursor[0] = (cursor[0] + 1) % len(REAL_SERVERS)
        live[key] = rs
        counts[rs] += 1
        yield env.timeout(HOLD)
        del live[key]
        counts[rs] -= 1

    def arrivals():  # type: ignore[no-untyped-def]
        for i in range(n):
            env.process(connection(i))
            yield env.timeout(1 / RATE)

    env.process(arrivals())
    start = time.perf_counter()
    env.run()
    return time.perf_counter() - start


def bytes_per_live(make, k: int) -> float:  # type: ignore[no-untyped-def]
    """Memory held per live connection, the clients' addresses (the workload's own) not counted."""
    addrs = clients(k)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keep = make(addrs)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del keep
    return (after - before) / k


def lbcore_live(addrs: list[ipaddress.IPv4Address]) -> object:
    sim = SimBackend()
    Balancer(sim).add_service(VirtualService(
        protocol="tcp", address=VIP, port=80, scheduler="rr",
        real_servers=[RealServer(rs, 80, forward="nat") for rs in REAL_SERVERS]))
    for addr in addrs:
        sim.director.packet_in(6, addr, 40000, VIP, 80, 0x02, 60)  # a SYN: the entry is live
    return sim


def simpy_live(addrs: list[ipaddress.IPv4Address]) -> object:
    env = simpy.Environment()
    live: dict[tuple[object, int], str] = {}

    def connection(i: int):  # type: ignore[no-untyped-def]
        live[(addrs[i], 40000)] = REAL_SERVERS[i % 8]
        yield env.timeout(HOLD)

    for i in range(len(addrs)):
        env.process(connection(i))
    env.run(until=HOLD / 2)
    return env, live


def main() -> None:
    parser = argparse.ArgumentParser(description="lbcore simulator benchmark (ratios vs SimPy)")
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--live", type=int, default=100_000)
    args = parser.parse_args()
    n = args.connections
    base = simpy_run(n)
    print(f"workload: {n} connections, {RATE:.0f}/s, held {HOLD:.0f} s, NAT, {len(REAL_SERVERS)} real servers")
    print(f"{'scheduler':<10}{'events/s':>12}{'conns/s':>12}{'vs SimPy':>10}")
    for scheduler in ("rr", "wrr", "sh", "mh", "dh", "wlc", "lblc"):
        elapsed, events = lbcore_run(scheduler, n)
        print(f"{scheduler:<10}{events / elapsed:>12,.0f}{n / elapsed:>12,.0f}{base / elapsed:>9.2f}x")
    print(f"{'simpy':<10}{'':>12}{n / base:>12,.0f}{1:>9.2f}x")
    mine = bytes_per_live(lbcore_live, args.live)
    theirs = bytes_per_live(simpy_live, args.live)
    print(f"bytes per live connection: lbcore {mine:.0f}, SimPy model {theirs:.0f}, ratio {mine / theirs:.2f}")


if __name__ == "__main__":
    main()
