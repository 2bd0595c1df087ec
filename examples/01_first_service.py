"""The guide's Option 1A: a DR virtual service with source-IP persistence, simulated.

Three web gateways behind one VIP in direct-routing mode; each client sticks to one gateway for
5 minutes. Clients connect, the clock moves, and the script prints the two reports of the guide:
"Layer 4 Status" (ipvsadm -Ln) and "Layer 4 Current Connections" (ipvsadm -Lnc).

Run it on the simulator (the default), or against the kernel with ``--backend ipvs`` (as root;
traffic and reports are simulator features).
"""

from __future__ import annotations

import argparse

from lbcore import Balancer, Persistence, RealServer, VirtualService
from lbcore.sim import SimBackend

VIP = "192.0.2.10"
GATEWAYS = ("198.51.100.11", "198.51.100.12", "198.51.100.13")
CLIENTS = ("203.0.113.5", "203.0.113.6", "203.0.113.7", "203.0.113.8")

SERVICE = VirtualService(
    protocol="tcp",
    address=VIP,
    port=80,
    scheduler="wlc",
    persistence=Persistence(timeout=300),
    real_servers=[RealServer(gw, 80, forward="dr") for gw in GATEWAYS],
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sim", help="sim (default) or ipvs")
    args = parser.parse_args()
    # The kernel's IPVS is shared: lbcore manages only the VIPs it is given.
    lb = Balancer(args.backend) if args.backend == "sim" else Balancer(args.backend, vips=[VIP])
    for op in lb.apply([SERVICE]):
        print("applied:", op)
    if not isinstance(lb.backend, SimBackend):
        return
    sim = lb.backend
    for client in CLIENTS:
        first = sim.connect(client, VIP, 80)
        again = sim.connect(client, VIP, 80)  # persistence: the same gateway
        assert first is not None and again is not None and first.endpoint == again.endpoint
        print(f"{client} -> {first.endpoint}")
        sim.disconnect(again)
        sim.advance(1)
    sim.advance(2)  # the kernel's counters are a snapshot taken every 2 s
    print()
    print(sim.status())
    print(sim.status(stats=True))
    print(sim.connections())


if __name__ == "__main__":
    main()
