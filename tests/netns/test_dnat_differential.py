"""The simulator's DNAT data plane against the real netfilter: the same events, the same picks.

Each scenario is carried out for real (the iptables backend in a namespace, real TCP from four
client addresses), recording when each event really happened; the simulator (dataplane
"iptables") then replays it at those times. Every connection must reach the same real server.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest
from _harness.netns import Lab
from lbcore_iptables import IPTablesBackend

from lbcore import Balancer, Persistence, RealServer, VirtualService
from lbcore.clock import VirtualClock
from lbcore.sim import SimBackend

pytestmark = pytest.mark.netns

VIP, PORT = "10.90.0.100", 80
CLIENTS = [f"10.90.0.{n}" for n in range(11, 15)]
RIPS = [f"10.91.{i}.2" for i in (1, 2, 3)]
TIMEOUT = 2


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab("client", "dir", "rs1", "rs2", "rs3") as lab:
        lab.link("client", "10.90.0.2/24", "dir", "10.90.0.1/24")
        for client in CLIENTS:
            lab.run("client", "ip", "addr", "add", f"{client}/24", "dev", lab.run(
                "client", "ip", "-o", "addr", "show", "to", "10.90.0.2").split()[1])
        lab.run("dir", "ip", "addr", "add", f"{VIP}/32", "dev", "lo")
        lab.run("client", "ip", "route", "add", "default", "via", "10.90.0.1")
        for i, rip in enumerate(RIPS, 1):
            lab.link("dir", f"10.91.{i}.1/24", f"rs{i}", f"{rip}/24")
            lab.run(f"rs{i}", "ip", "route", "add", "default", "via", f"10.91.{i}.1")
            lab.server(f"rs{i}", rip, PORT)
        lab.sysctl("dir", "net.ipv4.ip_forward", "1")
        yield lab


def _service(weights: list[int], persistent: bool) -> VirtualService:
    return VirtualService("tcp", VIP, PORT, scheduler="rr",
                          persistence=Persistence(timeout=TIMEOUT) if persistent else None,
                          real_servers=[RealServer(rip, PORT, forward="nat", weight=w)
                                        for rip, w in zip(RIPS, weights) if w is not None])


def _scenario(seed: int, persistent: bool) -> list[tuple[str, object]]:
    """Connections from random clients, weight changes (0 quiesces), and, with persistence,
    pauses well past the timeout (never near it: the kernel counts in jiffies)."""
    rng = random.Random(seed)
    events: list[tuple[str, object]] = [("apply", [1, 1, 1])]
    for _ in range(6):
        events += [("connect", rng.choice(CLIENTS)) for _ in range(rng.randint(5, 12))]
        events.append(("apply", [rng.choice([0, 1, 1, 2]) for _ in RIPS]))
        if persistent and rng.random() < 0.4:
            events.append(("sleep", TIMEOUT + 0.6))
    return events


@pytest.mark.parametrize("seed,persistent", [(1, False), (2, False), (3, True), (4, True)])
def test_the_simulator_picks_what_netfilter_picks(lab: Lab, seed: int, persistent: bool) -> None:
    events = _scenario(seed, persistent)
    real: list[str | None] = []
    when: list[float] = []
    with lab.inside("dir"):
        backend = IPTablesBackend(legacy_beside_nft=True)
    try:
        start = time.monotonic()
        for kind, arg in events:
            when.append(time.monotonic() - start)
            if kind == "apply":
                with lab.inside("dir"):
                    Balancer(backend).apply([_service(arg, persistent)])  # type: ignore[arg-type]
            elif kind == "connect":
                real.append(lab.ask("client", VIP, PORT, source=str(arg)))
            else:
                time.sleep(float(arg))  # type: ignore[arg-type]
        with lab.inside("dir"):
            Balancer(backend).apply([])
    finally:
        backend.close()

    clock = VirtualClock()
    sim = SimBackend(clock=clock, dataplane="iptables")
    simulated: list[str | None] = []
    for (kind, arg), at in zip(events, when):
        clock.set(at)
        if kind == "apply":
            Balancer(sim).apply([_service(arg, persistent)])  # type: ignore[arg-type]
        elif kind == "connect":
            conn = sim.connect(arg, VIP, PORT)
            simulated.append(None if conn is None else str(conn.real_server))
    assert len(real) > 30
    assert simulated == real
