"""Source-IP persistence: how long a client sticks, and the kernel's 60-second template quirk.

A persistence template lives ``timeout`` seconds after the client's last *new* connection. If it
runs out while one of the client's connections is still open, the kernel keeps it and re-arms it
for 60 s at a time (from then on, every reuse extends it by 60 s only). The simulator reproduces
this; the script shows a client keeping its gateway past the timeout, then losing it.
"""

from __future__ import annotations

import argparse

from lbcore import Balancer, Persistence, RealServer, VirtualService
from lbcore.sim import SimBackend

VIP = "192.0.2.20"
SERVICE = VirtualService(
    protocol="tcp", address=VIP, port=443, scheduler="rr",
    persistence=Persistence(timeout=30, netmask="255.255.255.0"),  # one template per client /24
    real_servers=[RealServer(f"198.51.100.{n}", 443, forward="dr") for n in (21, 22, 23)],
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sim", help="sim (default) or ipvs")
    args = parser.parse_args()
    # The kernel's IPVS is shared: lbcore manages only the VIPs it is given.
    lb = Balancer(args.backend) if args.backend == "sim" else Balancer(args.backend, vips=[VIP])
    lb.apply([SERVICE])
    if not isinstance(lb.backend, SimBackend):
        return
    sim = lb.backend
    held = sim.connect("203.0.113.9", VIP, 443)  # stays open
    assert held is not None
    print(f"t=0    203.0.113.9  -> {held.endpoint} (held open)")
    neighbour = sim.which("203.0.113.77", VIP, 443)
    print(f"t=0    203.0.113.77 -> {neighbour} (same /24: same template)")
    sim.advance(45)
    print(f"t=45   203.0.113.9  -> {sim.which('203.0.113.9', VIP, 443)} (timeout 30 s passed, "
          "but the template still controls the open connection)")
    sim.disconnect(held)
    sim.advance(300)
    print(f"t=345  203.0.113.9  -> {sim.which('203.0.113.9', VIP, 443)} (template gone: scheduled afresh)")
    print()
    print(sim.connections())


if __name__ == "__main__":
    main()
