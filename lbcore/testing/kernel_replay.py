"""The kernel's side of a trace replay: real TCP and UDP through IPVS between network namespaces.

Topology (created by :class:`Topology`, inside a kernel with IPVS, as root)::

    client netns "lbc"                 director (this netns)                real server netns "lbrN"
    10.0.x.y/16 (every trace client) -- lbc0 10.0.0.1/16                 -- 10.1.N.2/24, default via 10.1.N.1
      default via 10.0.0.1             VIP on lbvip (dummy)   lbrN 10.1.N.1/24
                                       ip_forward=1

NAT real servers route their replies back through the director. DR real servers hold the VIP on
``lo`` and answer the client directly (through the director, which routes 10.0.0.0/16): the
director accepts packets from its own VIP on those links (``accept_local=1``, ``rp_filter=0``).

:class:`KernelReplayer` carries out each event at its time, as well as real time allows, and
records when it really did: :meth:`KernelReplayer.as_run` is the trace with those times, which
the simulator replays to compare decision by decision.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from typing import IO

from lbcore.balancer import Balancer
from lbcore.errors import InvalidField, Unsupported
from lbcore.formats.trace import Close, Event, Open, Rules, Sysctl

CLIENT_NS = "lbc"
DIRECTOR_CLIENT_SIDE = "10.0.0.1"


def _run(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True)


def _write(path: str, value: str) -> str:
    with open(path, encoding="ascii") as f:
        before = f.read().strip()
    with open(path, "w", encoding="ascii") as f:
        f.write(value)
    return before


class Topology:
    """Namespaces, links and peers for replaying traces of one VIP in NAT or DR mode.

    Args:
        mode: "nat" or "dr".
        vip: the virtual IP (in 10.0.0.0/16, like the clients).
        clients: every client address the trace uses (10.0.0.0/16).
        real_servers: every real server address the trace uses (10.1.N.2).
        port: the port the real servers listen on.
    """

    def __init__(self, mode: str, vip: str, clients: Iterable[str], real_servers: Iterable[str],
                 port: int = 80) -> None:
        if mode not in ("nat", "dr"):
            raise InvalidField("Topology", "mode", mode, "is not nat or dr")
        self.mode, self.vip, self.port = mode, vip, port
        self.clients = sorted(set(clients), key=ipaddress.IPv4Address)
        self.real_servers = sorted(set(real_servers), key=ipaddress.IPv4Address)
        for rs in self.real_servers:
            if not re.fullmatch(r"10\.1\.\d+\.2", rs):
                raise InvalidField("Topology", "real_servers", rs, "is not 10.1.N.2")
        self.servers: list[subprocess.Popen[str]] = []
        self.client: subprocess.Popen[str] | None = None
        self._sysctls: list[tuple[str, str]] = []
        self._links: list[str] = []

    def _sysctl(self, path: str, value: str) -> None:
        self._sysctls.append((path, _write(path, value)))

    def up(self) -> None:
        """Create the namespaces, links and addresses, and start the peers."""
        self._sysctl("/proc/sys/net/ipv4/ip_forward", "1")
        self._sysctl("/proc/sys/net/ipv4/conf/all/rp_filter", "0")
        _run("ip", "link", "add", "lbvip", "type", "dummy")
        self._links.append("lbvip")
        _run("ip", "addr", "add", f"{self.vip}/32", "dev", "lbvip")
        _run("ip", "link", "set", "lbvip", "up")
        _run("ip", "netns", "add", CLIENT_NS)
        self._link(CLIENT_NS, "lbc0", f"{DIRECTOR_CLIENT_SIDE}/16")
        batch = "".join(f"addr add {c}/16 dev eth0\n" for c in self.clients)
        _run("ip", "-n", CLIENT_NS, "-batch", "-", stdin=batch)
        _run("ip", "-n", CLIENT_NS, "route", "add", "default", "via", DIRECTOR_CLIENT_SIDE)
        for rs in self.real_servers:
            n = rs.split(".")[2]
            ns, link = f"lbr{n}", f"lbr{n}"
            _run("ip", "netns", "add", ns)
            self._link(ns, link, f"10.1.{n}.1/24")
            _run("ip", "-n", ns, "addr", "add", f"{rs}/24", "dev", "eth0")
            _run("ip", "-n", ns, "route", "add", "default", "via", f"10.1.{n}.1")
            if self.mode == "dr":
                _run("ip", "-n", ns, "addr", "add", f"{self.vip}/32", "dev", "lo")
                self._sysctl(f"/proc/sys/net/ipv4/conf/{link}/accept_local", "1")
                self._sysctl(f"/proc/sys/net/ipv4/conf/{link}/rp_filter", "0")
            self.servers.append(self._peer(ns, "server", f"{rs}:{self.port}", str(self.port)))
        for server in self.servers:
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":
                raise RuntimeError("a real server did not start")
        self.client = self._peer(CLIENT_NS, "client")

    def _link(self, ns: str, outside: str, address: str) -> None:
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self._links.append(outside)
        _run("ip", "addr", "add", address, "dev", outside)
        _run("ip", "link", "set", outside, "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")

    @staticmethod
    def _peer(ns: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "lbcore.testing._peers", *args],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def down(self) -> None:
        """Stop the peers and remove everything :meth:`up` made."""
        for proc in [*self.servers, *([self.client] if self.client else [])]:
            proc.kill()
            proc.wait()
        for path, value in reversed(self._sysctls):
            _write(path, value)
        for ns in [CLIENT_NS, *(f"lbr{rs.split('.')[2]}" for rs in self.real_servers)]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        for link in self._links:
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)

    def __enter__(self) -> Topology:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def topology_for(events: Sequence[Event], mode: str) -> Topology:
    """A topology with every client, VIP and real server ``events`` use.

    Raises:
        Unsupported: the trace uses firewall marks or more than one VIP (not built here).
    """
    clients, vips, real_servers = set(), set(), set()
    for ev in events:
        if isinstance(ev, Open):
            if ev.mark:
                raise Unsupported("kernel replay", "fwmark", "marking the client's packets is not built")
            clients.add(str(ev.client))
            vips.add(str(ev.vip))
        elif isinstance(ev, Rules):
            real_servers.update(re.findall(r"-r\s+(\d+\.\d+\.\d+\.\d+)", ev.command))
    if len(vips) != 1:
        raise Unsupported("kernel replay", "vips", f"one VIP per trace, not {sorted(vips)}")
    return Topology(mode, vips.pop(), clients, real_servers)


class KernelReplayer:
    """Replays a trace on the kernel: rules through ``balancer``, connections as real traffic."""

    def __init__(self, balancer: Balancer, topology: Topology) -> None:
        self.balancer = balancer
        self.topology = topology
        self.start = time.monotonic()
        self.times: list[float] = []  # when each event was really carried out, in trace order
        self._last = (0.0, 0.0)  # (trace time, real time) of the previous event

    def _client(self) -> tuple[IO[str], IO[str]]:
        proc = self.topology.client
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        return proc.stdin, proc.stdout

    def wait_until(self, when: float) -> None:
        # Behind schedule, keep the trace's gaps rather than rush: a pause that lets timers
        # expire must last as long as the trace says.
        last_when, last_real = self._last
        target = max(when, last_real + (when - last_when))
        delay = self.start + target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.monotonic() - self.start
        self.times.append(now)
        self._last = (when, now)

    def open(self, event: Open) -> str | None:
        stdin, stdout = self._client()
        stdin.write(f"open {event.id} {event.protocol.value} {event.client} {event.client_port} "
                    f"{event.vip} {event.vport}\n")
        stdin.flush()
        ident, answer = stdout.readline().split()
        assert ident == event.id
        return None if answer == "-" else answer

    def close(self, event: Close) -> None:
        stdin, stdout = self._client()
        stdin.write(f"close {event.id}\n")
        stdin.flush()
        stdout.readline()

    def as_run(self, events: Sequence[Event]) -> str:
        """The trace with each event at the time it was really carried out."""
        return "".join(f"{t:.4f} {_text(ev)}\n" for t, ev in zip(self.times, events))


def _text(ev: Event) -> str:
    if isinstance(ev, Rules):
        return f"rules {ev.command}"
    if isinstance(ev, Sysctl):
        return f"sysctl {ev.name} {ev.value}"
    if isinstance(ev, Open):
        mark = f" mark={ev.mark}" if ev.mark else ""
        return f"open {ev.id} {ev.protocol.value} {ev.client}:{ev.client_port} {ev.vip}:{ev.vport}{mark}"
    return f"close {ev.id}"
