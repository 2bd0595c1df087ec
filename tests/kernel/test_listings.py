"""ipvsadm's listings from real IPVS: equal to the simulator's, and to ``ipvsadm``'s own text.

A short trace (three real servers, one quiesced; source-IP persistence; some connections closed,
some left open) is replayed as real TCP through the kernel (tests/_harness/kernel_replay.py), then on
the simulator at the times the kernel really carried each event out. Both then wait past the
estimator's next 2-second tick, and "Layer 4 Status" (``-Ln --stats``, ``-Ln --rate``, ``-Ln``,
``-Ln --persistent-conn``) and "Layer 4 Current Connections" (``-Lnc``) are printed from each
through the same :class:`lbcore.Listings` methods and compared line by line.

Masked (``*``), because the kernel's clock or its real TCP differ from the simulator's, and
nothing else:

* ``-Lnc``'s expire column: the kernel's timers run from when each packet really passed, the
  simulator's from the recorded times (rounded to 0.1 ms) and its own jiffies; a second may differ.
* ``--rate``'s five columns: the estimator's averages depend on where its 2-second ticks fall
  against the traffic; the kernel's tick from when its estimator started, the simulator's from 0.
* ``--stats``'s InPkts, OutPkts, InBytes, OutBytes: the simulator's clients send a handshake and a
  FIN exchange and nothing else, while the real peers also send the real server's greeting line
  and the ACKs, window updates and retransmissions real TCP adds. Conns is compared.

``-Lnc`` lines are compared sorted: the kernel lists its hash table's order (its seed is random),
the simulator sorts.

NAT only: in the replay topology, DR real servers answer through the director (it routes the
clients' network), so the kernel's IPVS sees their replies, counts them (OutPkts) and moves the
state on them (a closed connection ends in TIME_WAIT), whereas the simulator models DR as a
director sees it when replies bypass it (no OutPkts; FIN_WAIT). That is the topology, not the
clock, so it is not masked here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from _harness.kernel_replay import KernelReplayer, topology_for
from lbcore_ipvs import IPVSBackend

from lbcore import Balancer, Listings
from lbcore.formats.listing import timeout
from lbcore.formats.trace import parse_trace, replay
from lbcore.sim import SimBackend

pytestmark = pytest.mark.kernel

Run = Callable[..., str]

VIP = "10.0.0.200"
TRACE = f"""\
0    rules -A -t {VIP}:80 -s wlc -p 60
0    rules -a -t {VIP}:80 -r 10.1.1.2:80 -m -w 1
0    rules -a -t {VIP}:80 -r 10.1.2.2:80 -m -w 2
0    rules -a -t {VIP}:80 -r 10.1.3.2:80 -m -w 1
0.10 open 1 tcp 10.0.1.1:40001 {VIP}:80
0.15 open 2 tcp 10.0.1.2:40002 {VIP}:80
0.20 open 3 tcp 10.0.1.3:40003 {VIP}:80
0.25 open 4 tcp 10.0.1.4:40004 {VIP}:80
0.30 open 5 tcp 10.0.1.1:40005 {VIP}:80
0.40 rules -e -t {VIP}:80 -r 10.1.3.2:80 -m -w 0
0.45 open 6 tcp 10.0.1.5:40006 {VIP}:80
0.50 open 7 tcp 10.0.1.3:40007 {VIP}:80
0.60 close 1
0.65 close 3
0.70 close 6
"""
SETTLE = 3.0  # seconds after the last event: past the estimator's next tick on both sides

# (options, what to mask) for "Layer 4 Status", in the order the guide's page shows them.
STATUS = [
    ({"stats": True}, "stats"),
    ({"rate": True}, "rate"),
    ({}, None),
    ({"persistent_conn": True}, None),
]


def masked_status(text: str, mask: str | None) -> list[str]:
    """The listing's lines, with the columns the kernel's clock or TCP decide starred out.

    Service and real server lines of --stats and --rate are 33 columns of name, then five
    columns of 9 characters (print_largenum; --rate's packet rates are %8llu after a space).
    A masked column becomes one ``*``, right-aligned, whatever the number's width.
    """
    out = []
    for line in text.splitlines():
        if mask and (line.startswith("TCP ") or line.startswith("  -> ")) and "Remote" not in line:
            first = 33 if mask == "rate" else 42  # --stats keeps Conns
            tail = line[first:]
            line = line[:first] + "".join(f"{'*':>9}" for _ in range(0, len(tail), 9))
        out.append(line)
    return out


def masked_connections(text: str) -> list[str]:
    """-Lnc's title lines, then the trace's entries sorted, each with its expire column (mm:ss) starred out.

    The kernel's table is the whole namespace's: earlier kernel tests in the same boot leave entries
    of their own VIPs there (TIME_WAIT lasts 2 minutes), which are not this test's to compare.
    """
    lines = text.splitlines()
    entries = [f"{line[:4]}**:** {line[10:]}" for line in lines[2:] if line.split()[4] == f"{VIP}:80"]
    return lines[:2] + sorted(entries)


def show(title: str, kernel: str, sim: str) -> str:
    return f"--- {title}, kernel:\n{kernel}--- {title}, simulator:\n{sim}"


def test_kernel_and_simulator_print_the_same_layer_4_status_and_connections(ipvsadm: Run) -> None:
    events = parse_trace(TRACE, "listings.trace")
    backend = IPVSBackend(vips=[VIP])
    assert isinstance(backend, Listings)
    sim = SimBackend()
    assert isinstance(sim, Listings)
    with topology_for(events, "nat") as topology:
        kernel = KernelReplayer(Balancer(backend), topology)
        kernel_lines = replay(events, kernel)
        kernel.wait_until(events[-1].time + SETTLE)
        end = kernel.times[-1]
        kernel_status = [backend.status(**options) for options, _ in STATUS]
        kernel_conns = backend.connections()
        kernel_snapshot = backend.snapshot()
        Balancer(backend).apply([])  # remove the trace's service
    sim_lines = replay(parse_trace(kernel.as_run(events)), sim.replayer())
    sim.run_until(max(end, sim.clock.now()))
    sim_status = [sim.status(**options) for options, _ in STATUS]
    sim_conns = sim.connections()

    assert sim_lines == kernel_lines
    for (options, mask), mine, theirs in zip(STATUS, sim_status, kernel_status):
        title = f"Layer 4 Status {options}"
        print(show(title, theirs, mine))
        assert masked_status(mine, mask) == masked_status(theirs, mask), show(title, theirs, mine)
    print(show("Layer 4 Current Connections", kernel_conns, sim_conns))
    assert masked_connections(sim_conns) == masked_connections(kernel_conns), show(
        "Layer 4 Current Connections", kernel_conns, sim_conns)
    # Something to compare: every real server listed, connections open and closed, templates.
    assert len(kernel_snapshot.services) == 1 and len(kernel_snapshot.services[0].real_servers) == 3
    states = {entry.state for entry in kernel_snapshot.connections if str(entry.virtual) == VIP}
    assert {"ESTABLISHED", "ASSURED"} <= states and len(states) >= 3, states


def test_ipvs_backend_status_is_ipvsadm_ln_text(ipvsadm: Run) -> None:
    events = parse_trace(TRACE, "listings.trace")
    backend = IPVSBackend(vips=[VIP])
    with topology_for(events, "nat") as topology:
        kernel = KernelReplayer(Balancer(backend), topology)
        replay(events, kernel)
        kernel.wait_until(events[-1].time + SETTLE)
        for options, flags in [
            ({}, ["-Ln"]),
            ({"stats": True}, ["-Ln", "--stats"]),
            ({"stats": True, "exact": True}, ["-Ln", "--stats", "--exact"]),
            ({"persistent_conn": True}, ["-Ln", "--persistent-conn"]),
            ({"thresholds": True}, ["-Ln", "--thresholds"]),
            ({"tun_info": True}, ["-Ln", "--tun-info"]),
            ({"nosort": True}, ["-Ln", "--nosort"]),
        ]:
            assert backend.status(**options) == ipvsadm(*flags), flags
        # The rates move at every estimator tick: compare between two equal readings of ipvsadm.
        for _ in range(5):
            before, mine, after = ipvsadm("-Ln", "--rate"), backend.status(rate=True), ipvsadm("-Ln", "--rate")
            if before == after:
                break
        assert mine == before == after
        # -Lnc reads the same file; a second may pass between the two readings.
        assert masked_connections(backend.connections()) == masked_connections(ipvsadm("-Lnc"))
        assert timeout(backend.snapshot()) == ipvsadm("-L", "--timeout")
        assert Path("/proc/net/ip_vs").read_text().startswith(
            f"IP Virtual Server version 1.2.1 (size={backend.snapshot().conn_tab_size})")
        Balancer(backend).apply([])
