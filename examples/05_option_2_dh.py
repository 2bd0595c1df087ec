"""The guide's dh alternative for a transparent proxy: destination hashing, so each web site has one
gateway.

Option 2 (``04_option_2.py``) balances by client, with persistence. A transparent proxy can also be
balanced by where the traffic goes: the dh scheduler hashes the packet's destination address into
256 buckets dealt round robin over the gateways, so every request for one web site goes to the same
gateway, whoever asks, and each site is cached by one gateway only. dh needs no persistence: the
hash is the affinity. The marks, the policy route and the gateways' redirect are Option 2's.

dh has no fallback: a bucket whose gateway is quiesced (weight 0) finds no gateway, and its sites
are refused. So a failed gateway is removed rather than quiesced (``action="remove"`` for the health
monitor), and the 256 buckets are dealt again over the others. The script shows both.

Run it on the simulator (the default), or with ``--backend ipvs+iptables`` (as root, on the
director: it applies the service, the marks and the policy route).
"""

from __future__ import annotations

import argparse
from collections import Counter

from lbcore import Balancer, FirewallMark, PolicyRoute, RealServer, Table, VirtualService
from lbcore.sim import SimBackend
from lbcore.sim.workload import clients_in

MARK = 1
GATEWAYS = ("192.168.2.210", "192.168.2.211", "192.168.2.212")
MARKS = FirewallMark(MARK, "tcp", ports=(80, 443))
LOCAL_DELIVERY = PolicyRoute(MARK, 100)
#: Options of each backend. IPVS is shared, so lbcore manages only the services of mark 1 there; in
#: netfilter it owns its LBCORE-* chains, so these rules are all of lbcore's rules on the host.
OPTIONS = {"ipvs+iptables": {"ipvs": {"fwmarks": [MARK]}, "iptables": {}}}
SITES = [str(a) for a in clients_in("198.51.100.0/24", 30)]  # web sites the clients browse
CLIENTS = [str(a) for a in clients_in("192.168.10.0/24", 20)]


def service(weights: dict[str, int]) -> VirtualService:
    return VirtualService(fwmark=MARK, scheduler="dh",
                          real_servers=[RealServer(gw, 0, forward="dr", weight=w) for gw, w in weights.items()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sim", choices=["sim", *OPTIONS], help="sim (default) or ipvs+iptables")
    args = parser.parse_args()
    lb = Balancer(args.backend, **OPTIONS.get(args.backend, {}))
    healthy = {gw: 1 for gw in GATEWAYS}
    for op in lb.apply(Table([service(healthy)], rules=[MARKS, LOCAL_DELIVERY])):
        print("director:", op)
    if not isinstance(lb.backend, SimBackend):
        return
    sim = lb.backend

    def gateways_of_sites() -> dict[str, set[str | None]]:
        """For each site, the gateways that the clients' requests for it reach."""
        seen: dict[str, set[str | None]] = {site: set() for site in SITES}
        for site in SITES:
            for client in CLIENTS:
                seen[site].add(sim.which(client, site, 80))
        return seen

    before = gateways_of_sites()
    assert all(len(gateways) == 1 for gateways in before.values())  # one gateway per site, whoever asks
    print(f"\n{len(SITES)} sites, {len(CLIENTS)} clients: every site has one gateway; sites per gateway: "
          f"{dict(sorted(Counter(next(iter(g)) for g in before.values()).items()))}")

    lb.apply(Table([service({**healthy, GATEWAYS[2]: 0})], rules=[MARKS, LOCAL_DELIVERY]))
    refused = [site for site, gateways in gateways_of_sites().items() if gateways == {None}]
    print(f"gateway 3 quiesced: {len(refused)} sites refused (no fallback in dh)")

    lb.apply(Table([service({gw: 1 for gw in GATEWAYS[:2]})], rules=[MARKS, LOCAL_DELIVERY]))
    after = gateways_of_sites()
    assert all(len(gateways) == 1 and None not in gateways for gateways in after.values())
    moved = sum(1 for site in SITES if before[site] != after[site])
    print(f"gateway 3 removed: every site served again, {moved} of {len(SITES)} sites moved gateway")
    print()
    print(sim.status())


if __name__ == "__main__":
    main()
