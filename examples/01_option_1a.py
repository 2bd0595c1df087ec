"""The guide's Option 1A: web gateways as an explicit proxy behind a DR virtual service, simulated.

Clients' browsers use the proxy 192.168.2.202:8080, a layer-4 virtual service in direct-routing
(DR) mode with source-IP persistence of 3600 s, in front of three web gateways, 192.168.2.210 to
.212, each listening on 8080. In DR mode each gateway must accept traffic for the VIP without
answering ARP for it: the guide's answer is a REDIRECT rule on each gateway (``iptables -t nat -A
PREROUTING -p tcp -d 192.168.2.202 -j REDIRECT``), which is :class:`lbcore.Redirect`.

The script applies the service, and the gateways' rule on a simulated gateway, runs a short seeded
workload of clients, and prints the guide's two reports: "Layer 4 Status" (``ipvsadm -Ln``, with
statistics) and "Layer 4 Current Connections" (``ipvsadm -Lnc``).

Run it on the simulator (the default), or against the kernel with ``--backend ipvs`` (as root, on
the director: it applies the service; traffic and reports are simulator features, and the
gateways' rule belongs on the gateways, with ``Balancer("iptables")`` there).

The deployment (``DEPLOYMENT``, the same as ``examples/option-1a.yaml``) names the guide's health
check, a TCP connect to each gateway; this script applies the service and does not run the checks
(see ``lbcore.health``, and ``04_option_2.py``, which runs them). Not modelled yet: the director's
VIP itself (on the director's interface, or a floating IP of an HA pair) is set up outside lbcore.
"""

from __future__ import annotations

import argparse

from lbcore import Balancer, Deployment, Persistence, RealServer, Redirect, Table, VirtualService
from lbcore.formats.listing import layer4_report
from lbcore.health import CheckedService, Policy, TCPCheck
from lbcore.sim import SimBackend
from lbcore.sim.workload import Workload, clients_in, run

VIP = "192.168.2.202"
PORT = 8080
GATEWAYS = ("192.168.2.210", "192.168.2.211", "192.168.2.212")

SERVICE = VirtualService(
    protocol="tcp",
    address=VIP,
    port=PORT,
    scheduler="wlc",
    persistence=Persistence(timeout=3600),
    real_servers=[RealServer(gw, PORT, forward="dr") for gw in GATEWAYS],
)
#: The director's part (examples/option-1a.yaml says the same): the service, each gateway checked by a
#: TCP connect every 10 s; three failed in a row take it out, two passed bring it back.
DEPLOYMENT = Deployment(services=[CheckedService(
    service=SERVICE, check=TCPCheck(), policy=Policy(interval=10, timeout=5, fall=3, rise=2))])
#: On each gateway: accept the VIP's traffic as its own, without holding the VIP.
GATEWAY_RULE = Redirect(VIP, protocol="tcp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sim", help="sim (default) or ipvs")
    args = parser.parse_args()
    # The kernel's IPVS is shared: lbcore manages only the VIPs it is given.
    lb = Balancer(args.backend) if args.backend == "sim" else Balancer(args.backend, vips=[VIP])
    for op in lb.apply(DEPLOYMENT.table()):
        print("director:", op)
    if not isinstance(lb.backend, SimBackend):
        print("on each gateway:", GATEWAY_RULE.text())
        return
    for gateway in GATEWAYS:  # each gateway is a host of its own: a simulator of its own here
        for op in Balancer(SimBackend()).apply(Table([], rules=[GATEWAY_RULE])):
            print(f"gateway {gateway}:", op)
    sim = lb.backend
    # Eight clients of the office network browse for a minute; each sticks to its gateway.
    workload = Workload(vip=VIP, vport=PORT, clients=clients_in("192.168.10.0/24", 8), rate=1,
                        mean_session=10, duration=60, seed=1)
    result = run(sim, workload)
    gateway_of: dict[str, set[str | None]] = {}
    for client, endpoint in result.assignments:
        gateway_of.setdefault(str(client), set()).add(endpoint)
    assert all(len(endpoints) == 1 for endpoints in gateway_of.values())  # persistence held
    print(f"\n{result.opened} sessions from {len(gateway_of)} clients, {result.refused} refused; "
          f"per gateway: {dict(sorted(result.per_real_server.items()))}")
    sim.advance(120)  # the closed connections' entries expire (FIN_WAIT: 2 minutes); templates stay
    held = [sim.connect(client, VIP, PORT) for client in ("192.168.10.1", "192.168.10.2")]  # still open
    assert all(conn is not None for conn in held)
    sim.advance(2)  # the kernel's counters are a snapshot taken every 2 s
    print()
    print(layer4_report(sim.snapshot()))


if __name__ == "__main__":
    main()
