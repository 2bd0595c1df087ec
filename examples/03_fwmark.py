"""A firewall-mark service for a transparent proxy: HTTP and HTTPS as one service.

The guide marks tcp 80 and 443 with mark 1 in mangle PREROUTING and balances mark 1 with
persistence, so a client's HTTP and HTTPS go to the same proxy. Here the packets carry the mark
the iptables rules would give them (the iptables backend that writes those rules is planned).
"""

from __future__ import annotations

import argparse

from lbcore import Balancer, Persistence, RealServer, VirtualService
from lbcore.sim import SimBackend

PROXIES = ("198.51.100.31", "198.51.100.32")
SERVICE = VirtualService(
    fwmark=1, scheduler="sh", flags=["sh-fallback"], persistence=Persistence(timeout=600),
    real_servers=[RealServer(p, 0, forward="dr") for p in PROXIES],
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sim", help="sim (default) or ipvs")
    args = parser.parse_args()
    lb = Balancer(args.backend)
    lb.apply([SERVICE])
    if not isinstance(lb.backend, SimBackend):
        return
    sim = lb.backend
    for client in ("203.0.113.40", "203.0.113.41", "203.0.113.42"):
        web = sim.connect(client, "192.0.2.99", 80, mark=1)  # any destination: the mark decides
        tls = sim.connect(client, "192.0.2.200", 443, mark=1)
        assert web is not None and tls is not None
        print(f"{client}: http -> {web.endpoint}, https -> {tls.endpoint}")
        assert web.real_server == tls.real_server  # one fwmark template for both ports
    print()
    print(sim.status())


if __name__ == "__main__":
    main()
