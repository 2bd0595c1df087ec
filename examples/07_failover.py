"""A failover plan, tested in simulation: how many sessions move when gateway 2 fails?

Runs a seeded workload (Poisson arrivals, 1,000 clients) against three gateways with source
hashing, then compares where every client would land before and after gateway 2 is quiesced
(weight 0, as a health check would do) and after it is removed.
"""

from __future__ import annotations

import argparse

from lbcore import Balancer, RealServer, VirtualService
from lbcore.sim import SimBackend
from lbcore.sim.workload import Workload, clients_in, run

VIP = "192.0.2.40"
GATEWAYS = ("198.51.100.41", "198.51.100.42", "198.51.100.43")


def service(weights: dict[str, int]) -> VirtualService:
    return VirtualService(
        protocol="tcp", address=VIP, port=80, scheduler="sh", flags=["sh-fallback"],
        real_servers=[RealServer(gw, 80, forward="dr", weight=w) for gw, w in weights.items()],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sim", help="sim (default); the workload needs the sim")
    args = parser.parse_args()
    lb = Balancer(args.backend)
    healthy = {gw: 1 for gw in GATEWAYS}
    lb.apply([service(healthy)])
    if not isinstance(lb.backend, SimBackend):
        return
    sim = lb.backend
    workload = Workload(vip=VIP, vport=80, clients=clients_in("203.0.113.0/24", 250) + clients_in(
        "198.18.0.0/22", 750), rate=200, mean_session=5, duration=20, seed=1)
    result = run(sim, workload)
    print(f"{result.opened} sessions, {result.refused} refused: {dict(sorted(result.per_real_server.items()))}")

    before = {c: sim.which(c, VIP, 80) for c in workload.clients}
    lb.apply([service({**healthy, GATEWAYS[1]: 0})])  # quiesce gateway 2
    quiesced = {c: sim.which(c, VIP, 80) for c in workload.clients}
    lb.apply([service({gw: 1 for gw in GATEWAYS if gw != GATEWAYS[1]})])  # remove it
    removed = {c: sim.which(c, VIP, 80) for c in workload.clients}

    on_two = sum(1 for c in before if before[c] == f"{GATEWAYS[1]}:80")
    moved_q = sum(1 for c in before if before[c] != quiesced[c])
    moved_r = sum(1 for c in before if before[c] != removed[c])
    print(f"clients on gateway 2: {on_two}")
    print(f"quiesced: {moved_q} clients move (sh-fallback re-hashes only gateway 2's clients)")
    print(f"removed:  {moved_r} clients move (the 256 buckets are dealt again)")


if __name__ == "__main__":
    main()
