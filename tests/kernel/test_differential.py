"""Sim vs kernel: the same random traces, connection by connection, in NAT and DR mode.

Each trace is replayed on the kernel first (real TCP from a client namespace through IPVS to real
servers in their own namespaces), recording when each event was really carried out; the
simulator then replays the trace with those times. Every connection must reach the same real
server (or be refused by both); the connection tables (state and real server) and
``ipvsadm -Sn`` must agree at the end. A disagreement is a bug in the simulator.

The kernel's table is read once the real servers still in the service have answered every close
with their own FIN (:meth:`Topology.settle <_harness.kernel_replay.Topology.settle>`): the
simulator closes both sides at once, so its NAT entries are in TIME_WAIT, while the kernel's stay
in CLOSE_WAIT until the real server's FIN has passed the director. Read any earlier, a busy machine
showed the last few closes in CLOSE_WAIT on the kernel's side only: a race of the harness, not a
divergence of the simulator.

``LBCORE_DIFF_CONNECTIONS`` sets the connections per trace (default 2000), and with them each
test's budget (idle here: about 15 s for 2,000 connections in NAT, 30 s in DR, whose traces pause
for templates to expire).

The traces keep the default TCP timeouts: a client's FIN is sometimes sent twice (Linux's tail
loss probe, when the real server's ACK is a few ms late), so a closed DR connection ends in
FIN_WAIT or TIME_WAIT at random; both are inactive with the same 120 s by default, but a short
``--set`` tcpfin would make them differ, and with them whether a template outlives its timeout.
For the same reason the connection tables compare those two states as one.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from _harness.kernel_replay import KernelReplayer, topology_for
from lbcore_ipvs import IPVSBackend

from lbcore import Balancer, Scheduler, SetSysctls, SetTimeouts, Sysctls, Timeouts
from lbcore.formats.ipvsadm import dump_save
from lbcore.formats.listing import proc_ip_vs_conn
from lbcore.formats.trace import parse_trace, replay
from lbcore.sim import SimBackend
from lbcore.sim.replay import SimReplayer
from lbcore.testing.traces import TraceSpec, random_trace

CONNECTIONS = int(os.environ.get("LBCORE_DIFF_CONNECTIONS", "2000"))
# Seconds: the topology and the simulator, then the connections; room for a busy machine.
pytestmark = pytest.mark.kernel(budget=30 + 0.04 * CONNECTIONS)

SCHEDULERS = [s.value for s in Scheduler if s is not Scheduler.TWOS]  # Linux 6.1 has no twos
CASES = [(s, m) for s in SCHEDULERS for m in ("nat", "dr")]


@pytest.fixture
def restore_globals() -> Iterator[None]:
    """Timeouts and sysctls back to the defaults after a trace changed them."""
    yield
    Balancer(IPVSBackend()).execute([SetTimeouts(Timeouts()), SetSysctls(Sysctls())])


def conn_lines(text: str, vip_hex: str, dests: set[str]) -> dict[tuple[str, ...], int]:
    """/proc/net/ip_vs_conn of one VIP and its present real servers: the entry -> seconds left.

    Entries of deleted real servers are left out: IPVS drops their packets, and what becomes of
    them then depends on the client's TCP (it retransmits a dropped FIN, which expire_nodest_conn
    turned on later acts on), which the simulator's clients do not model.
    """
    out = {}
    for line in text.splitlines()[1:]:
        f = line.split()
        if f[3] == vip_hex and f[5] in dests:
            state = "FIN_WAIT|TIME_WAIT" if f[7] in ("FIN_WAIT", "TIME_WAIT") else f[7]  # see the module doc
            out[(f[0], f[1], f[2], f[3], f[4], f[5], f[6], state)] = int(f[8])
    return out


def merged(reads: Iterable[dict[tuple[str, ...], int]]) -> dict[tuple[str, ...], int]:
    """Every entry seen in any read, with the seconds left when first seen."""
    out: dict[tuple[str, ...], int] = {}
    for read in reads:
        for key, left in read.items():
            out.setdefault(key, left)
    return out


def explain(kernel: list[str], sim: list[str], as_run: str) -> str:
    """Where the first disagreement is, and the trace before it."""
    bad = [i for i, (k, s) in enumerate(zip(kernel, sim)) if k != s]
    first = bad[0]
    lines = as_run.splitlines()
    at = next(n for n, line in enumerate(lines) if f" open {kernel[first].split()[0]} " in line)
    return (f"{len(bad)} of {len(kernel)} differ; first: kernel {kernel[first]!r}, sim {sim[first]!r}\n"
            + "\n".join(lines[max(0, at - 30):at + 1]))


@pytest.mark.parametrize(("scheduler", "mode"), CASES, ids=[f"{s}-{m}" for s, m in CASES])
def test_kernel_and_simulator_agree_connection_by_connection(scheduler: str, mode: str,
                                                              restore_globals: None) -> None:
    index = CASES.index((scheduler, mode))
    vip = f"10.0.0.{100 + index}"  # a VIP per trace: no dest of an earlier trace in the trash
    spec = TraceSpec(scheduler=scheduler, forward=mode, connections=CONNECTIONS, clients=60,
                     real_servers=8, persistence=2 if mode == "dr" else 0,
                     sysctls=index % 3 == 0, step=0.002, seed=1000 + index, vip=vip)
    events = parse_trace(random_trace(spec))
    backend = IPVSBackend(vips=[vip])
    with topology_for(events, mode) as topology:
        kernel = KernelReplayer(Balancer(backend), topology)
        kernel_lines = replay(events, kernel)
        end = kernel.times[-1]
        # The real servers' FINs follow the client's a moment later: a NAT entry is in CLOSE_WAIT
        # until its real server's FIN has passed the director, in TIME_WAIT after (as in the sim).
        topology.settle(f"{rs.address}:{rs.port}" for svc in backend.read() for rs in svc.real_servers)
        # Three reads, merged: /proc/net/ip_vs_conn comes a page per read(), each page found again
        # by counting entries from the start, so an entry that expires between two pages makes the
        # next read skip one that is there. An entry missing from one read is in the others.
        kernel_conns = [Path("/proc/net/ip_vs_conn").read_text() for _ in range(3)]
        kernel_save = subprocess.run(["ipvsadm", "-Sn"], capture_output=True, text=True, check=True).stdout
        Balancer(backend).apply([])  # remove the trace's service
    sim = SimBackend()
    sim_lines = replay(parse_trace(kernel.as_run(events)), SimReplayer(sim))
    sim.run_until(max(end, sim.clock.now()))  # the as-run trace rounds times to 0.1 ms

    assert sim_lines == kernel_lines, explain(kernel_lines, sim_lines, kernel.as_run(events))
    assert len(sim_lines) == len(kernel_lines) == CONNECTIONS

    vip_hex = f"{int.from_bytes(bytes(map(int, vip.split('.'))), 'big'):08X}"
    assert [line for line in kernel_save.splitlines() if vip in line] == dump_save(sim.read()).splitlines()
    dests = {f"{int(rs.address):08X}" for svc in sim.read() for rs in svc.real_servers}
    mine, theirs = (conn_lines(proc_ip_vs_conn(sim.snapshot()), vip_hex, dests),
                    merged(conn_lines(text, vip_hex, dests) for text in kernel_conns))
    # Entries within 2 s of expiry may have gone on one side only (timer ticks vs recorded times).
    lasting = {k for k, left in mine.items() if left > 2} | {k for k, left in theirs.items() if left > 2}
    mine_lasting, theirs_lasting = {k for k in mine if k in lasting}, {k for k in theirs if k in lasting}
    assert mine_lasting == theirs_lasting, (f"sim only: {sorted(mine_lasting - theirs_lasting)[:5]}, "
                                            f"kernel only: {sorted(theirs_lasting - mine_lasting)[:5]}")
