"""1,000 applies while another program writes the same nat table: nothing lost, no EAGAIN escapes.

The other program owns a chain of its own (OPERATOR) and adds and deletes a rule in it in a loop.
Two kinds of writer: ``iptables-legacy -w``, which takes the xtables lock as lbcore does (iptables
1.8.9 takes it even without ``-w``, and ``-W`` is ignored), so the two take turns; and a libiptc
writer that takes no lock (python-iptables, as a program linked to libiptc would), so that commits
race and the kernel answers the loser with EAGAIN: lbcore must redo its edit on a fresh copy.

Each apply changes one real server's weight to a value never used before, so an update lost to a
race would show as a weight that does not match; read() is compared with what was applied after
every apply.
"""

from __future__ import annotations

import errno
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _harness.netns import Lab
from lbcore_iptables import IPTablesBackend

from lbcore import BackendError, Balancer, RealServer, VirtualService

pytestmark = pytest.mark.netns

APPLIES = 1000
VIP = "10.90.0.100"
REAL_SERVERS = [f"10.91.0.{n}" for n in range(1, 5)]

# The operator's loop: add, then delete, a rule in its own chain; count the commands that failed.
IPTABLES_LOOP = """
loops=0 failed=0
while [ ! -e "$1" ]; do
    iptables-legacy -w -t nat -A OPERATOR -j RETURN || failed=$((failed + 1))
    iptables-legacy -w -t nat -D OPERATOR -j RETURN || failed=$((failed + 1))
    loops=$((loops + 1))
done
echo "$loops $failed 0"
"""

# The same loop through libiptc without the lock: a commit that loses the race gets EAGAIN and is
# redone on a fresh copy, as every libiptc program must; anything else is a failure.
LIBIPTC_LOOP = """
import errno, os, sys
import iptc
from iptc import ip4tc

stop, loops, failed, eagain = sys.argv[1], 0, 0, 0
table = iptc.Table("nat", autocommit=False)
rule = iptc.Rule()
rule.target = iptc.Target(rule, "RETURN")
while not os.path.exists(stop):
    for verb in ("append_rule", "delete_rule"):
        while True:
            table.refresh()
            try:
                getattr(iptc.Chain(table, "OPERATOR"), verb)(rule)
                table.commit()
                break
            except iptc.IPTCError:
                if ip4tc._get_errno_loc()[0] != errno.EAGAIN:
                    failed += 1
                    break
                eagain += 1
    loops += 1
print(loops, failed, eagain)
"""


def _service(weights: list[int]) -> VirtualService:
    return VirtualService("tcp", VIP, 80, scheduler="wrr", real_servers=[
        RealServer(rs, 8080, forward="nat", weight=w) for rs, w in zip(REAL_SERVERS, weights)])


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab("dir") as lab:
        lab.run("dir", "iptables-legacy", "-t", "nat", "-N", "OPERATOR")
        yield lab


def _applies_under(lab: Lab, writer: list[str], stop: Path,
                   tolerate_einval: bool = False) -> tuple[IPTablesBackend, list[int], float, int, int]:
    """APPLIES applies while ``writer`` loops in the namespace.

    Returns the backend, the writer's counts (loops, failed, EAGAIN), the seconds the applies
    took, how many applies read() did not show right after, and how many failed with EINVAL
    (only with ``tolerate_einval``; any other error, EAGAIN included, fails the test).
    """
    operator = subprocess.Popen(["ip", "netns", "exec", lab.ns("dir"), *writer, str(stop)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with lab.inside("dir"):  # every libiptc call below must run in the namespace, not the host's
            backend = IPTablesBackend(legacy_beside_nft=True, weighted="random")
            try:
                lb = Balancer(backend)
                weights = [1, 1, 1, 1]
                lb.apply([_service(weights)])
                time.sleep(0.2)  # the writer is running before the applies start
                start = time.perf_counter()
                lost = einval = 0
                for i in range(APPLIES):
                    weights[i % 4] = i + 2  # a weight no earlier apply used
                    desired = _service(weights)
                    try:
                        lb.apply([desired])
                    except BackendError as exc:
                        if not (tolerate_einval and exc.errno == errno.EINVAL):
                            raise
                        einval += 1
                    if backend.read().services != {desired.key: desired}:
                        lost += 1
                elapsed = time.perf_counter() - start
                stop.touch()
                operator.wait(timeout=30)
                lb.apply([desired])  # the writer is gone: what lbcore holds is the last desired state
                assert backend.read().services == {desired.key: desired}
            finally:
                backend.close()
    finally:
        stop.touch()
        out, err = operator.communicate(timeout=30)
    assert operator.returncode == 0, err
    counts = [int(n) for n in out.split()]
    return backend, counts, elapsed, lost, einval


def test_applies_and_an_iptables_w_loop_take_turns_without_losing_anything(lab: Lab, tmp_path: Path) -> None:
    backend, (loops, failed, _), elapsed, lost, _ = _applies_under(
        lab, ["sh", "-c", IPTABLES_LOOP, "loop"], tmp_path / "stop")
    print(f"\n{APPLIES} applies in {elapsed:.1f} s beside iptables-legacy -w ({loops} loops, {failed} failed); "
          f"commits {backend.commits}, retries after EAGAIN {backend.retries}, lost {lost}")
    assert lost == 0
    assert loops > 0 and failed == 0
    assert ":OPERATOR -" in lab.save("dir", "nat")


def test_applies_retry_after_eagain_from_a_writer_that_takes_no_lock(lab: Lab, tmp_path: Path) -> None:
    # What is shown here: EAGAIN never escapes (it is retried). What is not promised: the kernel
    # refuses a commit (EAGAIN) only when the table's rule count moved since the copy was taken,
    # so a writer without the lock that commits a stale copy of the same size puts back the weight
    # lbcore replaced (lost); and libiptc's commit is two calls (replace the table, then add the
    # old counters), so a commit in between fails the second with EINVAL after the first took
    # effect. Neither is lbcore's to prevent: only the xtables lock, which this writer skips, is.
    backend, (loops, failed, eagain), elapsed, lost, einval = _applies_under(
        lab, [sys.executable, "-c", LIBIPTC_LOOP], tmp_path / "stop", tolerate_einval=True)
    print(f"\n{APPLIES} applies in {elapsed:.1f} s beside an unlocked libiptc writer ({loops} loops, "
          f"{failed} failed, {eagain} of its commits got EAGAIN); commits {backend.commits}, "
          f"retries after EAGAIN {backend.retries}; undone by the writer's stale commits {lost}, EINVAL {einval}")
    assert loops > 0 and failed == 0
    assert backend.retries > 0, "the race never happened: the test proved nothing"
    assert ":OPERATOR -" in lab.save("dir", "nat")
