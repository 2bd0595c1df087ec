"""The guide's Option 1B: the web gateways behind a NAT virtual service, the director their gateway.

Two-arm NAT: clients reach the proxy 192.168.2.202:8080 on the director's external arm
(192.168.2.0/24); the gateways, 192.168.4.210 to .212 on 8080, sit on the internal arm
(192.168.4.0/24), and their default gateway is the director's floating IP there, 192.168.4.205. So
their replies come back through the director, which translates them (NAT mode sees both
directions, so its statistics count outgoing packets too). Traffic the gateways start themselves
(their web requests on the clients' behalf, updates) leaves through the director's external
interface with the director's address: the guide's Auto-NAT, :class:`lbcore.AutoNat`.

The script applies the service and the Auto-NAT rule as one change, runs a short seeded workload,
and prints "Layer 4 Status" and "Layer 4 Current Connections".

Run it on the simulator (the default), or with ``--backend ipvs+iptables`` (as root, on the
director): the service goes into IPVS and the Auto-NAT rule into netfilter.

Not modelled yet: floating IPs. The director's 192.168.4.205 (and the VIP, when it floats between
an HA pair) is set up outside lbcore, and the simulator models the director's IPVS, not routing:
that the gateways route through 192.168.4.205 is their own configuration. IPv4 forwarding on the
director (``net.ipv4.ip_forward=1``) is also left to the operator.
"""

from __future__ import annotations

import argparse

from lbcore import AutoNat, Balancer, Deployment, Persistence, RealServer, VirtualService
from lbcore.formats.listing import layer4_report
from lbcore.health import CheckedService, Policy, TCPCheck
from lbcore.sim import SimBackend
from lbcore.sim.workload import Workload, clients_in, run

VIP = "192.168.2.202"
PORT = 8080
GATEWAYS = ("192.168.4.210", "192.168.4.211", "192.168.4.212")
INTERNAL_NETWORK = "192.168.4.0/24"
EXTERNAL_INTERFACE = "eth0"  # the director's arm towards the clients and the Internet
FLOATING_IP = "192.168.4.205"  # the gateways' default gateway: not modelled, see above

SERVICE = VirtualService(
    protocol="tcp",
    address=VIP,
    port=PORT,
    scheduler="wlc",
    persistence=Persistence(timeout=3600),
    real_servers=[RealServer(gw, PORT, forward="nat") for gw in GATEWAYS],
)
AUTO_NAT = AutoNat(EXTERNAL_INTERFACE, [INTERNAL_NETWORK])
#: The director's part (examples/option-1b.yaml says the same): the service with its gateways checked by
#: a TCP connect, and the Auto-NAT rule.
DEPLOYMENT = Deployment(services=[CheckedService(
    service=SERVICE, check=TCPCheck(), policy=Policy(interval=10, timeout=5, fall=3, rise=2))],
                        rules=[AUTO_NAT])
#: Options of each backend. IPVS is shared, so lbcore manages only the VIP's services there; in
#: netfilter it owns its LBCORE-* chains, so these rules are all of lbcore's rules on the host.
OPTIONS = {"sim": {}, "ipvs+iptables": {"ipvs": {"vips": [VIP]}, "iptables": {}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sim", choices=OPTIONS, help="sim (default) or ipvs+iptables")
    args = parser.parse_args()
    lb = Balancer(args.backend, **OPTIONS[args.backend])
    for op in lb.apply(DEPLOYMENT.table()):
        print("director:", op)
    print(f"on each gateway: default route via {FLOATING_IP} (the director's floating IP)")
    if not isinstance(lb.backend, SimBackend):
        return
    sim = lb.backend
    workload = Workload(vip=VIP, vport=PORT, clients=clients_in("192.168.10.0/24", 8), rate=1,
                        mean_session=10, duration=60, seed=1)
    result = run(sim, workload)
    print(f"\n{result.opened} sessions, {result.refused} refused; "
          f"per gateway: {dict(sorted(result.per_real_server.items()))}")
    sim.advance(120)  # the closed connections' entries expire (TIME_WAIT: 2 minutes); templates stay
    held = sim.connect("192.168.10.1", VIP, PORT)  # still open
    assert held is not None and held.endpoint.endswith(f":{PORT}")
    sim.advance(2)  # the kernel's counters are a snapshot taken every 2 s
    print()
    print(layer4_report(sim.snapshot()))


if __name__ == "__main__":
    main()
