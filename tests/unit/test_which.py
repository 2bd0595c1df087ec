"""which() answers what connect() then does, for every scheduler, and changes nothing."""

from __future__ import annotations

import random

import pytest

from lbcore import Balancer, Persistence, RealServer, Scheduler, VirtualService
from lbcore.sim import SimBackend

VIP = "192.0.2.10"


@pytest.mark.parametrize("scheduler", [s.value for s in Scheduler])
@pytest.mark.parametrize("persistent", [False, True])
def test_which_predicts_every_connect_without_changing_the_simulation(scheduler: str, persistent: bool) -> None:
    svc = VirtualService(
        protocol="tcp", address=VIP, port=80, scheduler=scheduler,
        persistence=Persistence(timeout=5) if persistent else None,
        real_servers=[RealServer(f"198.51.100.{n}", 80, weight=n, u_threshold=6 if n == 2 else 0)
                      for n in (1, 2, 3)],
    )

    def run(ask: bool) -> list[str | None]:
        rng = random.Random(5)
        sim = SimBackend(seed=9, kernel="6.2" if scheduler == "twos" else "6.1")
        Balancer(sim).add_service(svc)
        answers: list[str | None] = []
        held = []
        for i in range(300):
            client = f"203.0.113.{rng.randrange(1, 40)}"
            predicted = sim.which(client, VIP, 80) if ask else None
            conn = sim.connect(client, VIP, 80)
            answers.append(conn.endpoint if conn else None)
            if ask:
                assert predicted == answers[-1], f"connection {i}"
            if conn is not None:
                held.append(conn)
            if held and rng.random() < 0.5:
                sim.disconnect(held.pop(rng.randrange(len(held))))
            sim.advance(rng.random())
        return answers

    asked = run(ask=True)
    assert asked == run(ask=False)  # asking changed nothing
    if scheduler not in ("fo", "dh"):  # fo takes the heaviest, dh hashes the one VIP: one server
        assert len(set(asked)) > 1
