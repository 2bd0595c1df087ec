"""iptables backend speed, in a throw-away network namespace, as ratios against iptables-legacy-restore.

1. Full sync: ``Balancer(backend).apply(desired)`` of SERVICES services x 4 NAT real servers (rr)
   into an empty nat table, against ``iptables-legacy-restore`` of the very rules lbcore wrote
   (``iptables-legacy-save -t nat`` after lbcore's apply).
2. One service added to that table: lbcore's apply, and the commits it made (the target is one),
   against ``iptables-legacy-restore --noflush`` of the same delta (the new service's chains and
   rules, the diff of iptables-legacy-save before and after). Target: no slower than the restore.
3. Reading: ``read()`` of the whole table against ``iptables-legacy-save -t nat``, and
   ``read(keys={one})``, which must cost a small part of a full read.

Each service is 15 netfilter rules: its jump in LBCORE-SVC-PORT, a header rule (its ipvsadm lines
in comments) and 4 picks in its own chain, one DNAT rule in each real server's chain, and the owner
mark that opens each of its 5 chains. 1,000 services make 15,000 rules, plus lbcore's hooks.

The iptables commands run as child processes of the thread inside the namespace (they inherit it),
so no ``ip netns exec`` is timed; each figure is the process's wall time, Python's spawn included.
Every figure is the best of ``--repeat`` runs. Ratios are the result; absolute times vary by machine.

Usage (root): python benchmarks/bench_iptables.py [--services N] [--repeat N]
"""

from __future__ import annotations

import argparse
import ipaddress
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lbcore_iptables import IPTablesBackend

from lbcore import Balancer, RealServer, VirtualService

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the CI harness, tests/_harness
from _harness.netns import Lab

REAL_SERVERS = [f"10.200.0.{n}" for n in range(1, 5)]
EMPTY_NAT = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
            ":POSTROUTING ACCEPT [0:0]\nCOMMIT\n"


def service(i: int) -> VirtualService:
    return VirtualService("tcp", ipaddress.IPv4Address(0x0A640000 + i), 80, scheduler="rr",
                          real_servers=[RealServer(rs, 8080, forward="nat") for rs in REAL_SERVERS])


def sh(*argv: str, stdin: str | None = None) -> str:
    """Run an iptables command in the calling thread's namespace; return its output."""
    return subprocess.run(argv, input=stdin, text=True, capture_output=True, check=True).stdout


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def best(prepare: Callable[[], object], run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        prepare()
        times.append(timed(run))
    return min(times)


def save() -> str:
    """``iptables-legacy-save -t nat`` without its timestamped comment lines."""
    text = sh("iptables-legacy-save", "-t", "nat")
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))


def rule_count(save: str) -> int:
    return sum(1 for line in save.splitlines() if line.startswith("-A"))


def delta(before: str, after: str) -> str:
    """The lines ``after`` adds to ``before``, as an iptables-restore --noflush input."""
    old = set(before.splitlines())
    lines = [line for line in after.splitlines() if line not in old]
    chains = [line for line in lines if line.startswith(":")]
    rules = [line for line in lines if line.startswith("-A")]
    assert len(chains) + len(rules) == len(lines), lines
    assert old <= set(after.splitlines())
    return "\n".join(["*nat", *chains, *rules, "COMMIT", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description="iptables backend benchmark (ratios vs iptables-legacy-restore)")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n, repeat = args.services, args.repeat
    desired = [service(i) for i in range(n)]
    extra = service(n)

    with Lab("bench") as lab, lab.inside("bench"):
        backend = IPTablesBackend(legacy_beside_nft=True)
        try:
            lb = Balancer(backend)

            def empty() -> None:
                sh("iptables-legacy-restore", stdin=EMPTY_NAT)

            # 1. Full sync.
            mine_full = best(empty, lambda: lb.apply(desired), repeat)
            full = save()
            rules = rule_count(full)
            theirs_full = best(empty, lambda: sh("iptables-legacy-restore", stdin=full), repeat)
            assert save() == full
            print(f"full sync of {n} services x {len(REAL_SERVERS)} (rr, NAT) into an empty nat table: "
                  f"{rules} rules")
            print(f"  lbcore apply {mine_full * 1000:.0f} ms, iptables-legacy-restore {theirs_full * 1000:.0f} ms, "
                  f"ratio {mine_full / theirs_full:.2f}")

            # 2. One service added to the full table.
            def reset() -> None:
                sh("iptables-legacy-restore", stdin=full)

            commits: list[int] = []

            def add_one() -> None:
                before = backend.commits
                lb.apply([*desired, extra])
                commits.append(backend.commits - before)

            mine_one = best(reset, add_one, repeat)
            after = save()
            change = delta(full, after)

            def add_one_imperative() -> None:
                before = backend.commits
                lb.add_service(extra)
                commits.append(backend.commits - before)

            mine_verb = best(reset, add_one_imperative, repeat)
            theirs_one = best(reset, lambda: sh("iptables-legacy-restore", "--noflush", stdin=change), repeat)
            assert save() == after
            print(f"one service added to {rules} rules ({rule_count(change)} rules, "
                  f"{change.count(chr(10) + ':')} chains): commits per apply {sorted(set(commits))}")
            print(f"  lbcore apply(desired) {mine_one * 1000:.1f} ms, add_service {mine_verb * 1000:.1f} ms, "
                  f"iptables-legacy-restore --noflush {theirs_one * 1000:.1f} ms, "
                  f"ratios {mine_one / theirs_one:.2f} and {mine_verb / theirs_one:.2f} (target <= 1)")

            # 3. Reading.
            reset()
            assert len(backend.read()) == n
            mine_read = best(lambda: None, backend.read, repeat)  # warm: it keeps what it parsed

            def cold() -> None:
                fresh = IPTablesBackend(legacy_beside_nft=True)
                try:
                    fresh.read()
                finally:
                    fresh.close()

            mine_cold = best(lambda: None, cold, repeat)
            theirs_read = best(lambda: None, lambda: sh("iptables-legacy-save", "-t", "nat"), repeat)
            one_key = {desired[n // 2].key}
            mine_key = best(lambda: None, lambda: backend.read(one_key), repeat)
            print(f"read of {n} services ({rules} rules): lbcore read() {mine_read * 1000:.0f} ms "
                  f"(a new backend's first: {mine_cold * 1000:.0f} ms), iptables-legacy-save -t nat "
                  f"{theirs_read * 1000:.0f} ms, ratios {mine_read / theirs_read:.2f} ({mine_cold / theirs_read:.2f})")
            print(f"  read(keys={{one}}) {mine_key * 1000:.1f} ms, {mine_key / mine_read:.3f} of a full read")
        finally:
            backend.close()


if __name__ == "__main__":
    main()
