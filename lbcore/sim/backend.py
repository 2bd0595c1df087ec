"""SimBackend: the default backend, an in-memory IPVS on a virtual clock, with a traffic API."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, ClassVar

import attrs

from lbcore import dnat
from lbcore._fields import as_address
from lbcore.backend import ALL_CAPABILITIES, Capability, ConnectionCounts, ExplainsRefusals, Listings, prepare
from lbcore.clock import Clock, VirtualClock
from lbcore.enums import Protocol, Scheduler
from lbcore.errors import BackendError, InvalidField, LBError, ServiceNotFound
from lbcore.formats import listing
from lbcore.formats.trace import Replayer
from lbcore.model import IPAddress, ServiceKey, Sysctls, Timeouts, VirtualService, format_endpoint
from lbcore.ops import Op
from lbcore.rules import FirewallMark, firewall_mark
from lbcore.sim._dataplane import DataPlane, IPVSDataPlane
from lbcore.sim.director import Conn, Director
from lbcore.sim.dnat import DNATDataPlane
from lbcore.sim.profile import LINUX_6_1, KernelProfile
from lbcore.sim.replay import SimReplayer
from lbcore.sim.snapshot import snapshot
from lbcore.sim.whatif import Engine
from lbcore.table import Table
from lbcore.whatif import Progress, Result, Scenario

if TYPE_CHECKING:
    from lbcore.deployment import Deployment

EPHEMERAL_PORTS = (32768, 60999)  # net.ipv4.ip_local_port_range

@attrs.frozen
class Connection:
    """A client's connection through the simulated director.

    Attributes:
        id: the simulator's serial number for it.
        protocol: tcp or udp.
        client, client_port, vip, vport: the client's side of it.
        real_server: the address of the real server IPVS chose.
        real_port: the port it was forwarded to.

    .. versionadded:: 0.1
    """

    id: int
    protocol: Protocol
    client: IPAddress
    client_port: int
    vip: IPAddress
    vport: int
    real_server: IPAddress
    real_port: int
    _conn: Conn | None = attrs.field(repr=False, eq=False)

    @property
    def endpoint(self) -> str:
        """``rip:rport`` as the trace format and ipvsadm print it."""
        return format_endpoint(self.real_server, self.real_port)

    @property
    def template(self) -> object | None:
        """The persistence template that gave this connection its real server (the IPVS data plane's
        entry: the same object for every connection it controls), or None.

        .. versionadded:: 0.4
        """
        return None if self._conn is None else self._conn.control


#: The simulated clock's end (see advance()).
_MAX_TIME = float(2**40)

class SimBackend(ConnectionCounts, ExplainsRefusals, Listings):
    """The simulator: lbcore's control plane on an in-memory model of the kernel's IPVS.

    Args:
        clock: the clock it runs on; a new :class:`~lbcore.clock.VirtualClock` by default.
        seed: seed of the random source that twos draws from.
        kernel: the kernel to reproduce: a :class:`~lbcore.sim.profile.KernelProfile` or a
            release name ("6.1").
        dataplane: "ipvs" (the default) simulates the kernel's IPVS; "iptables" simulates the
            iptables backend's DNAT balancer (:mod:`lbcore.dnat`, :mod:`lbcore.sim.dnat`) and
            refuses what that backend refuses, so a script can ask what those rules will do.
        weighted: with dataplane "iptables", "random" accepts wrr as weighted random, as
            :class:`lbcore_iptables.IPTablesBackend` does.

    Raises:
        InvalidField: an unknown kernel release, data plane, or ``weighted``.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2 ``dataplane`` and ``weighted``.
    """

    name: ClassVar[str] = "sim"
    capabilities: frozenset[Capability] = ALL_CAPABILITIES

    def __init__(self, clock: Clock | None = None, seed: int = 0, kernel: KernelProfile | str = LINUX_6_1,
                 dataplane: str = "ipvs", weighted: str | None = None) -> None:
        self.clock: Clock = clock if clock is not None else VirtualClock()
        self.kernel = kernel if isinstance(kernel, KernelProfile) else KernelProfile(release=kernel)
        self.director = Director(self.clock.now, seed, self.kernel)
        # A scheduler the simulated release lacks is refused as that kernel refuses it.
        missing = frozenset(Scheduler) - self.kernel.schedulers
        self.capabilities = ALL_CAPABILITIES - {Capability.for_scheduler(s) for s in missing}
        if dataplane not in ("ipvs", "iptables"):
            raise InvalidField("SimBackend", "dataplane", dataplane, "is not 'ipvs' or 'iptables'")
        if weighted not in (None, dnat.WEIGHTED_RANDOM) or (weighted and dataplane != "iptables"):
            raise InvalidField("SimBackend", "weighted", weighted, "is only 'random', with dataplane 'iptables'")
        self.dataplane = dataplane
        # The data plane is chosen here, once; everything after asks it without knowing which.
        self._plane: DataPlane
        if dataplane == "iptables":
            self.capabilities = dnat.capabilities(weighted)
            self._plane = DNATDataPlane(self.clock.now, seed)
        else:
            self._plane = IPVSDataPlane(self.director)
        self._table = Table(timeouts=Timeouts(), sysctls=Sysctls(), rules={})
        self._serial = 0
        self._next_port: dict[IPAddress, int] = {}

    def why_not(self, capability: Capability) -> str | None:
        """Name the kernel release that has a scheduler the simulated one lacks.

        The optional feature ``lbcore.backend.ExplainsRefusals``.
        """
        if self.dataplane != "ipvs":
            return None  # the DNAT data plane lacks what the iptables backend lacks, on any release
        lacking = [s for s in Scheduler if Capability.for_scheduler(s) is capability]
        return self.kernel.lacks(lacking[0]) if lacking else None

    # -- the backend protocol ----------------------------------------------------------------------

    def read(self, keys: Collection[ServiceKey] | None = None) -> Table:
        """The simulated kernel's table (it holds nothing lbcore does not own), or part of it."""
        if keys is None:
            return self._table
        return attrs.evolve(self._table, services={k: self._table.services[k] for k in keys
                                                   if k in self._table.services})

    def apply(self, ops: Sequence[Op]) -> None:
        """Apply every op, or none: :func:`~lbcore.prepare` checks them all on the table
        (the simulator's control plane) before the data plane carries out any.

        The data plane is all-or-nothing too: it saves its state before it carries out the first
        op, and puts it back if any op fails there, so a failure leaves the table, the services'
        scheduling state and every connection entry exactly as they were.

        Raises:
            ServiceExists, ServiceNotFound, RealServerExists, RealServerNotFound, RuleExists,
                RuleNotFound, InvalidField: an op does not fit the table; nothing was changed.
            BackendError: the data plane failed on a checked op (a bug in the simulator); it
                was put back as it was, and nothing was changed.
        """
        prepared = prepare(self._table, ops)
        saved = self._plane.save(prepared)
        try:
            self._plane.commit(prepared)
        except BaseException as exc:  # KeyboardInterrupt too: the plane is never left half-changed
            self._plane.restore(saved)
            if isinstance(exc, LBError) or not isinstance(exc, Exception):
                raise
            raise BackendError("sim", f"the simulated data plane failed ({exc!r}); nothing was changed") from exc
        self._table = prepared.after

    def close(self) -> None:
        """Nothing to release."""

    # -- time --------------------------------------------------------------------------------------

    @staticmethod
    def _within_range(when: object) -> None:
        if isinstance(when, (int, float)) and not isinstance(when, bool) and when > _MAX_TIME:
            raise InvalidField("SimBackend", "when", when, "is beyond the simulated clock's range (2**40 s)")

    def _virtual(self) -> VirtualClock:
        if not isinstance(self.clock, VirtualClock):
            raise InvalidField("SimBackend", "clock", self.clock, "is not a VirtualClock: it cannot be moved")
        return self.clock

    def advance(self, seconds: float) -> None:
        """Move the virtual clock forward, firing the timers that fall due (expiry, GC, stats).

        Raises:
            InvalidField: the clock is not virtual, ``seconds`` is negative, or the clock would pass
                2**40 s (beyond it, float time no longer moves by the estimator's 2 s).
        """
        self._within_range(self.clock.now() + seconds if isinstance(seconds, (int, float)) else seconds)
        self._virtual().advance(seconds)
        self._plane.run_timers(self.clock.now())

    def run_until(self, when: float) -> None:
        """Move the virtual clock forward to ``when``.

        Raises:
            InvalidField: the clock is not virtual, ``when`` is in the past, or beyond 2**40 s.
        """
        self._within_range(when)
        self._virtual().set(when)
        self._plane.run_timers(when)

    # -- traffic -----------------------------------------------------------------------------------

    def _client_port(self, client: IPAddress, port: int | None) -> int:
        if port is not None:
            return port
        lo, hi = EPHEMERAL_PORTS
        nxt = self._next_port.get(client, lo)
        self._next_port[client] = lo if nxt >= hi else nxt + 1
        return nxt

    def _endpoints(
        self, client: object, vip: object, vport: int, cport: int | None
    ) -> tuple[IPAddress, int, IPAddress]:
        caddr, vaddr = as_address(client), as_address(vip)
        for name, value in (("client", caddr), ("vip", vaddr)):
            if not isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                raise InvalidField("SimBackend", name, value, "is not an IPv4 or IPv6 address")
        assert isinstance(caddr, (ipaddress.IPv4Address, ipaddress.IPv6Address))
        assert isinstance(vaddr, (ipaddress.IPv4Address, ipaddress.IPv6Address))
        return caddr, self._client_port(caddr, cport), vaddr

    def _mark(self, mark: int | None, proto: Protocol, caddr: IPAddress, vaddr: IPAddress, vport: int) -> int:
        if mark is not None:
            return mark
        marks = [r for r in (self._table.rules or {}).values() if isinstance(r, FirewallMark)]
        if not marks or vaddr.version != 4:
            return 0
        return firewall_mark(marks, proto, caddr, vaddr, vport)

    def connect(self, client: object, vip: object, vport: int, *, protocol: Protocol | str = Protocol.TCP,
                client_port: int | None = None, mark: int | None = None,
                payload: int = 0) -> Connection | None:
        """Open a connection from ``client`` to ``vip:vport`` as a real client would.

        TCP: the client's SYN, the real server's SYN+ACK (seen by a NAT director only) and the
        client's ACK; the connection stays open until :meth:`close`. UDP: one datagram of
        ``payload`` bytes each way. ``mark`` is the firewall mark the packets carry; None lets the
        table's :class:`~lbcore.rules.FirewallMark` rules mark them, as mangle PREROUTING does
        before IPVS sees a packet.

        Returns:
            The connection, or None when IPVS took none (no service, or no real server available).

        Raises:
            InvalidField: an address or the protocol is not valid.
        """
        proto = Protocol(protocol) if isinstance(protocol, str) else protocol
        caddr, cport, vaddr = self._endpoints(client, vip, vport, client_port)
        mark = self._mark(mark, proto, caddr, vaddr, vport)
        reached = self._plane.connect(proto, caddr, cport, vaddr, vport, mark, payload)
        if reached is None:
            return None
        self._serial += 1
        return Connection(self._serial, proto, caddr, cport, vaddr, vport, reached.address, reached.port,
                          reached.entry)

    def which(self, client: object, vip: object, vport: int, *, protocol: Protocol | str = Protocol.TCP,
              mark: int | None = None) -> str | None:
        """The ``rip:rport`` a new connection from ``client`` would reach now, or None.

        Nothing changes: schedulers that keep state (rr's cursor, lblc's cache, twos' random
        source) are asked what they would pick, not made to pick.

        Raises:
            InvalidField: an address or the protocol is not valid.
        """
        proto = Protocol(protocol) if isinstance(protocol, str) else protocol
        caddr, _, vaddr = self._endpoints(client, vip, vport, 0)
        mark = self._mark(mark, proto, caddr, vaddr, vport)
        reached = self._plane.which(proto, caddr, EPHEMERAL_PORTS[0], vaddr, vport, mark)
        return None if reached is None else format_endpoint(reached.address, reached.port)

    def disconnect(self, connection: Connection) -> None:
        """Close a TCP connection the way a client does: its FIN first, then the real server's.

        UDP has nothing to close: its entry expires after the udp timeout.
        """
        c = connection
        self._plane.disconnect(c.protocol, c.client, c.client_port, c.vip, c.vport, c._conn)

    def replayer(self) -> Replayer:
        """A replayer of traces on this simulator (:class:`lbcore.formats.trace.Replayable`).

        Raises:
            Nothing.

        .. versionadded:: 0.3
        """
        return SimReplayer(self)

    def what_if(self, deployment: Deployment, scenario: Scenario, progress: Progress | None = None) -> Result:
        """Play a what-if ``scenario`` against ``deployment`` (:class:`lbcore.whatif.WhatIf`).

        Each run is on a new simulator of this one's kernel release, seeded with the scenario's
        seed, on a clock of its own; this simulator is left as it is.

        Raises:
            InvalidField: the scenario does not fit the deployment.
            LBError: the deployment does not apply to the simulator (e.g. a scheduler this kernel
                release lacks: :class:`~lbcore.errors.Unsupported`).

        .. versionadded:: 0.4
        """
        kernel, dataplane = self.kernel, self.dataplane

        def make(clock: VirtualClock) -> SimBackend:
            return SimBackend(clock=clock, seed=scenario.seed, kernel=kernel, dataplane=dataplane)

        return Engine(make, deployment, scenario, progress).result()

    # -- ipvsadm's listings (lbcore.backend.Listings) -----------------------------------------------

    def _ipvs(self, what: str) -> Director:
        if self.dataplane != "ipvs":
            raise InvalidField("SimBackend", "dataplane", self.dataplane, f"has no IPVS to {what}: it is "
                               "the DNAT balancer's nat rules")
        return self.director

    def snapshot(self) -> listing.Snapshot:
        """What ipvsadm's listings show of the simulated kernel now (:mod:`lbcore.formats.listing`).

        Connections are sorted (by protocol, source, virtual, destination), not in the kernel's
        hash order. Timers that are due fire first.

        Raises:
            InvalidField: the data plane is the DNAT balancer's, which has no IPVS to list.

        .. versionadded:: 0.3
        """
        return snapshot(self._ipvs("snapshot"))

    def status(self, *, stats: bool = False, rate: bool = False, thresholds: bool = False,
               persistent_conn: bool = False, tun_info: bool = False, exact: bool = False,
               nosort: bool = False) -> str:
        """``ipvsadm -Ln`` of the simulated kernel: the guide's "Layer 4 Status".

        The options are :func:`lbcore.formats.listing.status`'s. Statistics are the estimator's
        last snapshot (taken every 2 s), minus the zero point of :meth:`zero`.

        Raises:
            InvalidField: the data plane is the DNAT balancer's, which has no IPVS to list.

        .. versionchanged:: 0.3 the options are keyword arguments of their own.
        """
        return listing.status(snapshot(self._ipvs("status"), connections=False), stats=stats, rate=rate,
                              thresholds=thresholds, persistent_conn=persistent_conn, tun_info=tun_info,
                              exact=exact, nosort=nosort)

    def connections(self, *, persistent_conn: bool = False) -> str:
        """``ipvsadm -Lnc`` of the simulated kernel: the guide's "Layer 4 Current Connections".

        The option is :func:`lbcore.formats.listing.connections`'s. Entries are sorted, not in
        the kernel's hash order.

        Raises:
            InvalidField: the data plane is the DNAT balancer's, which has no IPVS to list.

        .. versionchanged:: 0.3 the option is a keyword argument of its own.
        """
        return listing.connections(snapshot(self._ipvs("connections"), services=False),
                                   persistent_conn=persistent_conn)

    def connection_counts(self, key: ServiceKey) -> dict[tuple[IPAddress, int], int] | None:
        """Each real server's active + inactive connections in service ``key`` (ipvsadm's
        ActiveConn + InActConn), as a graceful drain waits on; {} for no such service. None with
        the DNAT data plane, which, like the iptables backend, counts none.

        .. versionadded:: 0.2
        """
        return self._plane.connection_counts(key)

    def zero(self, service: VirtualService | ServiceKey | None = None) -> None:
        """Zero the statistics of one service and its real servers, or of all (ipvsadm -Z). Sim only.

        Raises:
            ServiceNotFound: no virtual service has this identity.
        """
        key = service.key if isinstance(service, VirtualService) else service
        if key is not None and key not in self._ipvs("zero").services:
            raise ServiceNotFound(f"no virtual service {key}")
        self.director.run_timers(self.clock.now())  # a snapshot due by now is taken first
        self.director.zero(key)
