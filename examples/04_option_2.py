"""The guide's Option 2: the web gateways as a transparent proxy, behind a firewall-mark service.

Clients browse as if there were no proxy. Their router sends web traffic (TCP 80 and 443, to any
address) to the director; the director marks it (mark 1, in mangle PREROUTING), delivers marked
packets to itself by a policy route (``ip rule add fwmark 1 table 100`` and ``ip route add local
0/0 dev lo table 100``: :class:`lbcore.PolicyRoute`), and balances mark 1 in DR mode, with
source-IP persistence of 3600 s, over the gateways 192.168.2.210 to .212. A fwmark service's real
servers have no port of their own (0: the packet keeps its port), so the health check is a ping.
Each gateway, in transparent mode, redirects the web traffic it receives to its proxy port
(:class:`lbcore.Redirect`).

The script applies the service, the marks and the policy route as one change; clients open HTTP
and HTTPS connections to several web sites (one template per client covers both ports); then a
gateway stops answering pings, the health monitor takes it out (weight 0), and new clients go to
the other two. It prints the monitor's events, "Layer 4 Status" and "Layer 4 Current Connections".

Run it on the simulator (the default), or with ``--backend ipvs+iptables`` (as root, on the
director): the service goes into IPVS, the marks into netfilter and the policy route into the
routing tables. There the checks run on asyncio (``lbcore.health.AsyncioProber``); this script
runs them only in the simulator, on its virtual clock.

Not modelled yet: the router's side (its policy route that sends web traffic to the director is
the router's configuration), and floating IPs (the director's address on the clients' side, when
an HA pair shares it, is set up outside lbcore).
"""

from __future__ import annotations

import argparse

from lbcore import Balancer, Deployment, FirewallMark, Persistence, PolicyRoute, RealServer, Redirect, VirtualService
from lbcore.formats.listing import layer4_report
from lbcore.health import CheckedService, EventKind, Monitor, PingCheck, Policy, SimProber
from lbcore.sim import SimBackend

MARK = 1
GATEWAYS = ("192.168.2.210", "192.168.2.211", "192.168.2.212")
SERVICE = VirtualService(
    fwmark=MARK, scheduler="wlc", persistence=Persistence(timeout=3600),
    real_servers=[RealServer(gw, 0, forward="dr") for gw in GATEWAYS],
)
MARKS = FirewallMark(MARK, "tcp", ports=(80, 443))
LOCAL_DELIVERY = PolicyRoute(MARK, 100)
#: On each gateway: web traffic for any address is the proxy's (its port 8080, in this example).
GATEWAY_RULE = Redirect(None, port=80, to_port=8080)
#: The health check: a ping every 10 s; three lost in a row take a gateway out, two answered bring
#: it back (this example's policy).
CHECK = CheckedService(service=SERVICE, check=PingCheck(), policy=Policy(interval=10, timeout=5, fall=3, rise=2))
#: The director's part (examples/option-2.yaml says the same): the checked service, the marks, the policy route.
DEPLOYMENT = Deployment(services=[CHECK], rules=[MARKS, LOCAL_DELIVERY])
#: Options of each backend. IPVS is shared, so lbcore manages only the services of mark 1 there; in
#: netfilter it owns its LBCORE-* chains, so these rules are all of lbcore's rules on the host.
OPTIONS = {"ipvs+iptables": {"ipvs": {"fwmarks": [MARK]}, "iptables": {}}}
SITES = ("192.0.2.80", "198.51.100.80", "203.0.113.80")  # web sites the clients browse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sim", choices=["sim", *OPTIONS], help="sim (default) or ipvs+iptables")
    args = parser.parse_args()
    prober = SimProber()  # the simulated gateways, on the clock the simulator shares
    lb = Balancer(SimBackend(clock=prober.clock)) if args.backend == "sim" else Balancer(
        args.backend, **OPTIONS[args.backend])
    for op in lb.apply(DEPLOYMENT.table()):
        print("director:", op)
    print("on each gateway:", GATEWAY_RULE.text())
    if not isinstance(lb.backend, SimBackend):
        return
    sim = lb.backend
    monitor = Monitor(lb, DEPLOYMENT.checked(), prober)
    monitor.start()
    for n, client in enumerate(("192.168.10.1", "192.168.10.2", "192.168.10.3")):
        web = sim.connect(client, SITES[n], 80)  # any destination: the mark decides
        tls = sim.connect(client, SITES[n - 1], 443)
        assert web is not None and tls is not None and web.real_server == tls.real_server
        print(f"{client}: http://{SITES[n]} -> {web.endpoint}, https://{SITES[n - 1]} -> {tls.endpoint}")
        sim.disconnect(web)
    assert sim.connect("192.168.10.1", SITES[0], 22) is None  # ssh is not marked: not balanced
    prober.fleet.fail(GATEWAYS[2], at=prober.clock.now() + 1)
    prober.run_until(prober.clock.now() + 60)
    for event in monitor.events:
        print(f"t={event.time:.0f}s {event.kind.value} {event.address or ''}")
    assert [e.kind for e in monitor.events] == [EventKind.DOWN]
    for client in ("192.168.10.4", "192.168.10.5", "192.168.10.6"):
        conn = sim.connect(client, SITES[0], 80)
        assert conn is not None and str(conn.real_server) != GATEWAYS[2]
        print(f"{client}: http://{SITES[0]} -> {conn.endpoint}")
    monitor.stop()
    assert lb.read().rules.keys() == {MARKS.key, LOCAL_DELIVERY.key}  # the monitor changed weights only
    prober.run_until(prober.clock.now() + 2)  # the kernel's counters are a snapshot taken every 2 s
    print()
    print(layer4_report(sim.snapshot()))


if __name__ == "__main__":
    main()
