"""The kernel's side of a trace replay: real TCP and UDP through IPVS between network namespaces.

Topology (created by :class:`Topology`, a :class:`~_harness.netns.Lab`, inside a kernel with IPVS,
as root; namespaces and links are named by the lab)::

    client netns "client"              director (this netns)                real server netns "rsN"
    10.0.x.y/16 (every trace client) -- veth 10.0.0.1/16                 -- 10.1.N.2/24, default via 10.1.N.1
      default via 10.0.0.1             VIP on a dummy link    veth 10.1.N.1/24
                                       ip_forward=1

NAT real servers route their replies back through the director. DR real servers hold the VIP on
``lo`` and answer the client directly (through the director, which routes 10.0.0.0/16): the
director accepts packets from its own VIP on those links (``accept_local=1``, ``rp_filter=0``).

:class:`KernelReplayer` carries out each event at its time, as well as real time allows, and
records when it really did: :meth:`KernelReplayer.as_run` is the trace with those times, which
the simulator replays to compare decision by decision. Behind schedule, it keeps only the trace's
pauses (gaps of :data:`PAUSE` seconds or more, which let timers expire) and runs the rest back to
back: the simulator replays the times the kernel really had, so short gaps decide nothing.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from typing import IO

from _harness.netns import HERE, Lab
from lbcore.balancer import Balancer
from lbcore.errors import InvalidField, Unsupported
from lbcore.formats.trace import Close, Event, Open, Rules, Sysctl

#: The client namespace's name in the topology's :class:`~_harness.netns.Lab` (its real name is
#: ``topology.ns(CLIENT_NS)``).
CLIENT_NS = "client"
DIRECTOR_CLIENT_SIDE = "10.0.0.1"
#: A gap between two events of at least this many seconds is a pause that lets timers expire,
#: kept in full even when the replay is behind; shorter gaps are not kept then.
PAUSE = 0.5


class Topology(Lab):
    """Namespaces, links and peers for replaying traces of one VIP in NAT or DR mode.

    A :class:`~_harness.netns.Lab` whose director is the caller's own namespace: the test runs
    IPVS where it stands, and everything else comes and goes with the lab.

    Args:
        mode: "nat" or "dr".
        vip: the virtual IP (in 10.0.0.0/16, like the clients).
        clients: every client address the trace uses (10.0.0.0/16).
        real_servers: every real server address the trace uses (10.1.N.2).
        port: the port the real servers listen on.

    Raises:
        InvalidField: a mode or real server address this topology cannot make.
    """

    def __init__(self, mode: str, vip: str, clients: Iterable[str], real_servers: Iterable[str],
                 port: int = 80) -> None:
        if mode not in ("nat", "dr"):
            raise InvalidField("Topology", "mode", mode, "is not nat or dr")
        real_servers = sorted(set(real_servers), key=ipaddress.IPv4Address)
        for rs in real_servers:
            if not re.fullmatch(r"10\.1\.\d+\.2", rs):
                raise InvalidField("Topology", "real_servers", rs, "is not 10.1.N.2")
        super().__init__(CLIENT_NS, *(self.server_ns(rs) for rs in real_servers), tools=())
        self.mode, self.vip, self.port = mode, vip, port
        self.clients = sorted(set(clients), key=ipaddress.IPv4Address)
        if not self.clients:
            raise InvalidField("Topology", "clients", self.clients, "is empty")
        self.real_servers = real_servers
        self.servers: list[subprocess.Popen[str]] = []
        self.client: subprocess.Popen[str] | None = None

    @staticmethod
    def server_ns(rs: str) -> str:
        """The namespace of real server ``rs`` (10.1.N.2) in the lab: ``rsN``."""
        return f"rs{rs.split('.')[2]}"

    def up(self) -> None:
        """Create the namespaces, links and addresses, and start the peers."""
        super().up()
        self.sysctl(HERE, "net.ipv4.ip_forward", "1")
        self.sysctl(HERE, "net.ipv4.conf.all.rp_filter", "0")
        # One ip process for the director's side and one per namespace (each costs about 40 ms
        # in user-mode Linux), rather than Lab.link's four per link.
        vip_dev, client_here, client_there = self.device(), self.device(), self.device()
        here = [f"link add {vip_dev} type dummy", f"addr add {self.vip}/32 dev {vip_dev}", f"link set {vip_dev} up",
                *self._veth(client_here, f"{DIRECTOR_CLIENT_SIDE}/16", CLIENT_NS, client_there)]
        there = {CLIENT_NS: [*(f"addr add {c}/16 dev {client_there}" for c in self.clients),
                             f"link set {client_there} up", f"route add default via {DIRECTOR_CLIENT_SIDE}"]}
        towards_servers = []
        for rs in self.real_servers:
            n, ns, rs_here, rs_there = rs.split(".")[2], self.server_ns(rs), self.device(), self.device()
            here += self._veth(rs_here, f"10.1.{n}.1/24", ns, rs_there)
            towards_servers.append(rs_here)
            there[ns] = [f"addr add {rs}/24 dev {rs_there}", f"link set {rs_there} up",
                         f"route add default via 10.1.{n}.1"]
            if self.mode == "dr":
                there[ns].append(f"addr add {self.vip}/32 dev lo")
        for dev in (vip_dev, client_here, *towards_servers):
            self.here_link(dev)
        self.batch(HERE, here)
        for ns, commands in there.items():
            self.batch(ns, commands)
        if self.mode == "dr":
            for dev in towards_servers:
                self.sysctl(HERE, f"net.ipv4.conf.{dev}.accept_local", "1")
                self.sysctl(HERE, f"net.ipv4.conf.{dev}.rp_filter", "0")
        server = self.peer(CLIENT_NS, "servers", str(self.port),
                           *(f"{self.ns(self.server_ns(rs))}={rs}:{self.port}" for rs in self.real_servers))
        self.servers.append(server)
        self.wait_ready(server, "the real servers")
        self.client = self.peer(CLIENT_NS, "client")

    def _veth(self, here: str, address: str, ns: str, there: str) -> list[str]:
        return [f"link add {here} type veth peer name {there} netns {self.ns(ns)}",
                f"addr add {address} dev {here}", f"link set {here} up"]

    def down(self) -> None:
        """Stop the peers and remove everything :meth:`up` made."""
        super().down()
        self.servers.clear()
        self.client = None

    def settle(self, real_servers: Iterable[str], timeout: float = 10.0) -> None:
        """Wait until these real servers (``ip:port``) have closed the connections the client closed.

        The trace says a real server closes only after the client; its FIN reaches the director a
        moment after the client's, and a NAT entry is in CLOSE_WAIT until it does (TIME_WAIT
        after). Read the kernel's connection table after this, not before. Name the real servers
        still in the service: IPVS drops the packets of a deleted one's connections.

        Raises:
            RuntimeError: some real server's FIN did not come within ``timeout`` seconds.
        """
        answer = _say(self.client_pipes(), " ".join(["settle", str(timeout), *real_servers]))
        if answer != "settled":
            raise RuntimeError(f"the real servers did not close every connection within {timeout} s: {answer}")

    def client_pipes(self) -> tuple[IO[str], IO[str]]:
        """The client peer's stdin and stdout (see ``_peers.py`` for what it understands)."""
        proc = self.client
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        return proc.stdin, proc.stdout


def _say(pipes: tuple[IO[str], IO[str]], line: str) -> str:
    stdin, stdout = pipes
    stdin.write(line + "\n")
    stdin.flush()
    return stdout.readline().strip()


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

    def wait_until(self, when: float) -> None:
        """Wait until trace time ``when``; behind schedule, only as long as a pause of the trace."""
        last_when, last_real = self._last
        gap = when - last_when
        target = max(when, last_real + gap) if gap >= PAUSE else when
        delay = self.start + target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.monotonic() - self.start
        self.times.append(now)
        self._last = (when, now)

    def open(self, event: Open) -> str | None:
        """Open the connection from the client namespace; the real server that answered, or None."""
        answer = _say(self.topology.client_pipes(), f"open {event.id} {event.protocol.value} {event.client} "
                      f"{event.client_port} {event.vip} {event.vport}")
        ident, reached = answer.split()
        assert ident == event.id, answer
        return None if reached == "-" else reached

    def close(self, event: Close) -> None:
        """Send the client's FIN (the real server answers with its own, a moment later)."""
        _say(self.topology.client_pipes(), f"close {event.id}")

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
