"""IPVS backend speed, inside a real kernel (user-mode Linux), as ratios against ipvsadm.

1. Bulk apply of 1,000 and 5,000 services x 4 real servers to an empty table, against
   ``ipvsadm -R`` of the same rules (ipvsadm-save format, from lbcore.formats.ipvsadm.dump_save).
2. One change (a weight) with 5,000 services present, against the same change with 100.
3. Re-applying an unchanged config: the mutating netlink messages sent (the target is zero).

Run on the host: ``python benchmarks/bench_ipvs.py``; it boots the kernel and runs itself inside.
Each figure is the best of three runs. Ratios are the result; absolute times vary by machine.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

from lbcore import Balancer, RealServer, VirtualService
from lbcore.formats.ipvsadm import dump_save

REAL_SERVERS = [f"10.200.0.{n}" for n in range(1, 5)]


def services(n: int, weight: int = 1) -> list[VirtualService]:
    return [VirtualService(protocol="tcp", address=ipaddress.IPv4Address(0x0A640000 + i), port=80, scheduler="wlc",
                           real_servers=[RealServer(rs, 80, forward="dr", weight=weight) for rs in REAL_SERVERS])
            for i in range(n)]


def best(run, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        subprocess.run(["ipvsadm", "-C"], check=True)
        times.append(run())
    return min(times)


def lbcore_bulk(n: int) -> float:
    from lbcore_ipvs import IPVSBackend

    desired = services(n)
    vips = [svc.address for svc in desired]

    def run() -> float:
        lb = Balancer(IPVSBackend(vips=vips))
        start = time.perf_counter()
        lb.apply(desired)
        return time.perf_counter() - start

    return best(run)


def ipvsadm_bulk(n: int) -> float:
    rules = dump_save(services(n))

    def run() -> float:
        start = time.perf_counter()
        subprocess.run(["ipvsadm", "-R"], input=rules, text=True, check=True)
        return time.perf_counter() - start

    return best(run)


def one_change(n: int) -> float:
    from lbcore_ipvs import IPVSBackend

    desired = services(n)
    vips = [svc.address for svc in desired]
    subprocess.run(["ipvsadm", "-C"], check=True)
    subprocess.run(["ipvsadm", "-R"], input=dump_save(desired), text=True, check=True)
    lb = Balancer(IPVSBackend(vips=vips))
    svc = desired[n // 2]
    times = []
    for weight in (2, 3, 4):
        start = time.perf_counter()
        lb.edit_real_server(svc, RealServer(REAL_SERVERS[0], 80, forward="dr", weight=weight))
        times.append(time.perf_counter() - start)
    return min(times)


def no_op_mutations(n: int) -> int:
    from lbcore_ipvs import IPVSBackend

    desired = services(n)
    backend = IPVSBackend(vips=[svc.address for svc in desired])
    lb = Balancer(backend)
    subprocess.run(["ipvsadm", "-C"], check=True)
    lb.apply(desired)
    before = backend.socket.mutations
    assert lb.apply(desired) == []
    return backend.socket.mutations - before


def inside() -> None:
    subprocess.run("ip link add bench0 type dummy && ip link set bench0 up && ip addr add 10.200.0.254/24 dev bench0",
                   shell=True, check=True)
    for n in (1000, 5000):
        mine, theirs = lbcore_bulk(n), ipvsadm_bulk(n)
        print(f"bulk apply {n} services x 4: lbcore {mine:.2f} s, ipvsadm -R {theirs:.2f} s, ratio {mine / theirs:.2f}")
    at5k, at100 = one_change(5000), one_change(100)
    print(f"one change: at 5000 services {at5k * 1000:.1f} ms, at 100 {at100 * 1000:.1f} ms, ratio {at5k / at100:.2f}")
    print(f"re-applying an unchanged config of 1000 services: {no_op_mutations(1000)} mutating messages")
    subprocess.run(["ipvsadm", "-C"], check=True)


def main() -> None:
    if os.environ.get("LBCORE_IN_UML"):
        inside()
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the CI harness, tests/_harness
    from _harness.uml import run_in_uml

    result = run_in_uml([sys.executable, str(Path(__file__).resolve())], cwd=str(Path(__file__).parent.parent),
                        timeout=1200)
    print(result.output, end="")
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
