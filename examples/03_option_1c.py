"""The guide's Option 1C: the web gateways behind a NAT virtual service, one arm, a static route.

One-arm NAT: the director, the VIP 192.168.2.202:8080 and the gateways, 192.168.2.210 to .212 on
8080, share one subnet, and the gateways keep the router as their default gateway. Replies to the
clients must still come back through the director, which translates them: each gateway has a
static route to the client network (here 192.168.10.0/24) via the director. The gateways' own
traffic goes out through the router as before, so the director needs no Auto-NAT.

The script applies the service, runs a short seeded workload, and prints "Layer 4 Status" and
"Layer 4 Current Connections".

Run it on the simulator (the default), or against the kernel with ``--backend ipvs`` (as root, on
the director: it applies the service; traffic and reports are simulator features).

Not modelled yet: the gateways' static route (``ip route add 192.168.10.0/24 via <director>``):
lbcore's routes are policy routes of marked packets (:class:`lbcore.PolicyRoute`), not a plain
route on a real server; and floating IPs, so the director's address that the route names (a floating
IP, when an HA pair shares it) is set up outside lbcore.
"""

from __future__ import annotations

import argparse

from lbcore import Balancer, Deployment, Persistence, RealServer, VirtualService
from lbcore.formats.listing import layer4_report
from lbcore.health import CheckedService, Policy, TCPCheck
from lbcore.sim import SimBackend
from lbcore.sim.workload import Workload, clients_in, run

VIP = "192.168.2.202"
PORT = 8080
GATEWAYS = ("192.168.2.210", "192.168.2.211", "192.168.2.212")
CLIENT_NETWORK = "192.168.10.0/24"

SERVICE = VirtualService(
    protocol="tcp",
    address=VIP,
    port=PORT,
    scheduler="wlc",
    persistence=Persistence(timeout=3600),
    real_servers=[RealServer(gw, PORT, forward="nat") for gw in GATEWAYS],
)
#: The director's part (examples/option-1c.yaml says the same): the service, its gateways checked by a TCP
#: connect; no Auto-NAT.
DEPLOYMENT = Deployment(services=[CheckedService(
    service=SERVICE, check=TCPCheck(), policy=Policy(interval=10, timeout=5, fall=3, rise=2))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sim", help="sim (default) or ipvs")
    args = parser.parse_args()
    # The kernel's IPVS is shared: lbcore manages only the VIPs it is given.
    lb = Balancer(args.backend) if args.backend == "sim" else Balancer(args.backend, vips=[VIP])
    for op in lb.apply(DEPLOYMENT.table()):
        print("director:", op)
    print(f"on each gateway: a route to {CLIENT_NETWORK} via the director")
    if not isinstance(lb.backend, SimBackend):
        return
    sim = lb.backend
    workload = Workload(vip=VIP, vport=PORT, clients=clients_in(CLIENT_NETWORK, 8), rate=1,
                        mean_session=10, duration=60, seed=3)
    result = run(sim, workload)
    print(f"\n{result.opened} sessions, {result.refused} refused; "
          f"per gateway: {dict(sorted(result.per_real_server.items()))}")
    sim.advance(120)  # the closed connections' entries expire (TIME_WAIT: 2 minutes); templates stay
    held = sim.connect("192.168.10.1", VIP, PORT)  # still open
    assert held is not None
    sim.advance(2)  # the kernel's counters are a snapshot taken every 2 s
    print()
    print(layer4_report(sim.snapshot()))


if __name__ == "__main__":
    main()
