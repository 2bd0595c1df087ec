"""A representative deployment through the ipvs backend, and a process that applies it (to be killed).

Imported by tests/kernel/test_ipvs_sigkill.py for the deployments; run by it as a child::

    python tests/kernel/_ipvs_apply.py start|goal

which opens the backend, writes ``ready <sends so far>`` on stdout, applies the deployment, and writes
``{"ops": n, "sends": m, "seconds": s}`` (``sends``: netlink sends of the process, counted when
``LBCORE_IPVS_KILL_AT_SEND`` is set). The test kills it with SIGKILL at a netlink send (that
variable) or at a random instant after ``ready``.

The VIPs are 10.0.3.1 and 10.0.3.2 and the firewall mark 31, on real servers in 10.0.5.0/24:
addresses no other kernel test uses.
"""

from __future__ import annotations

import json
import sys
import time

from lbcore_ipvs import IPVSBackend

from lbcore import Balancer, Persistence, RealServer, Table, Timeouts, VirtualService

VIPS = ("10.0.3.1", "10.0.3.2")
MARK = 31
NET = "10.0.5"


def rs(n: int, port: int = 80, **kwargs: object) -> RealServer:
    return RealServer(f"{NET}.{n}", port, forward="nat", **kwargs)  # type: ignore[arg-type]


#: Where each killed apply starts from.
START = Table([
    VirtualService(protocol="tcp", address=VIPS[0], port=80, scheduler="wlc", real_servers=[rs(1), rs(2), rs(3)]),
    VirtualService(protocol="udp", address=VIPS[1], port=53, scheduler="rr", real_servers=[rs(1, 53), rs(2, 53)]),
    VirtualService(protocol="tcp", address=VIPS[0], port=443, scheduler="sh", persistence=Persistence(300),
                   real_servers=[rs(4, 443)]),
], timeouts=Timeouts(tcp=600, tcpfin=30, udp=60))

#: What it applies: every kind of op (services and real servers added, edited and deleted; timeouts).
GOAL = Table([
    VirtualService(protocol="tcp", address=VIPS[0], port=80, scheduler="rr",
                   real_servers=[rs(1, weight=5), rs(4), rs(5, 8080)]),
    VirtualService(protocol="tcp", address=VIPS[0], port=443, scheduler="sh",
                   persistence=Persistence(600, netmask="255.255.255.0"), real_servers=[rs(4, 443), rs(6, 443)]),
    VirtualService(fwmark=MARK, scheduler="wlc", real_servers=[RealServer(f"{NET}.{n}", 0) for n in (6, 7)]),
    VirtualService(protocol="tcp", address=VIPS[1], port=80, scheduler="mh", flags=["mh-port"],
                   real_servers=[rs(n) for n in (1, 2, 3, 4)]),
], timeouts=Timeouts())

DEPLOYMENTS = {"start": START, "goal": GOAL}


def open_backend() -> IPVSBackend:
    return IPVSBackend(vips=VIPS, fwmarks=[MARK])


def main() -> None:
    from lbcore_ipvs import _netlink

    desired = DEPLOYMENTS[sys.argv[1]]
    lb = Balancer(open_backend())
    print(f"ready {_netlink.sends()}", flush=True)
    started = time.monotonic()
    ops = lb.apply(desired)
    print(json.dumps({"ops": len(ops), "sends": _netlink.sends(), "seconds": time.monotonic() - started}),
          flush=True)


if __name__ == "__main__":
    main()
