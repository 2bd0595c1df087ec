"""A firewall-mark service for a transparent proxy: HTTP and HTTPS as one service.

The guide marks tcp 80 and 443 with mark 1 in mangle PREROUTING and balances mark 1 with
persistence, so a client's HTTP and HTTPS go to the same proxy. The service and the MARK rules
that feed it are declared together and applied as one change: the simulator marks packets by the
rules as mangle PREROUTING would; ``--backend ipvs+iptables`` (as root) writes the service into
IPVS and the rules into netfilter.
"""

from __future__ import annotations

import argparse

from lbcore import Balancer, FirewallMark, Persistence, RealServer, Table, VirtualService
from lbcore.sim import SimBackend

PROXIES = ("198.51.100.31", "198.51.100.32")
SERVICE = VirtualService(
    fwmark=1, scheduler="sh", flags=["sh-fallback"], persistence=Persistence(timeout=600),
    real_servers=[RealServer(p, 0, forward="dr") for p in PROXIES],
)
MARKS = FirewallMark(1, "tcp", ports=(80, 443))
#: Options of each backend. IPVS is shared, so lbcore manages only the services of mark 1 there; in
#: netfilter it owns its LBCORE-* chains, so these rules are all of lbcore's rules on the host.
OPTIONS = {"sim": {}, "ipvs+iptables": {"ipvs": {"fwmarks": [1]}, "iptables": {}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sim", choices=OPTIONS, help="sim (default) or ipvs+iptables")
    args = parser.parse_args()
    lb = Balancer(args.backend, **OPTIONS[args.backend])
    for op in lb.apply(Table([SERVICE], rules=[MARKS])):
        print("applied:", op)
    if not isinstance(lb.backend, SimBackend):
        return
    sim = lb.backend
    for client in ("203.0.113.40", "203.0.113.41", "203.0.113.42"):
        web = sim.connect(client, "192.0.2.99", 80)  # any destination: the mark decides
        tls = sim.connect(client, "192.0.2.200", 443)
        assert web is not None and tls is not None
        print(f"{client}: http -> {web.endpoint}, https -> {tls.endpoint}")
        assert web.real_server == tls.real_server  # one fwmark template for both ports
    assert sim.connect("203.0.113.40", "192.0.2.99", 22) is None  # ssh is not marked
    print()
    print(sim.status())


if __name__ == "__main__":
    main()
