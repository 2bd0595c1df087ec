"""SimBackend: the default backend, an in-memory IPVS on a virtual clock, with a traffic API."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from typing import ClassVar

import attrs

from lbcore import dnat
from lbcore._fields import as_address
from lbcore.backend import ALL_CAPABILITIES, Capability
from lbcore.clock import Clock, VirtualClock
from lbcore.enums import Protocol, Scheduler
from lbcore.errors import InvalidField, ServiceNotFound
from lbcore.model import IPAddress, ServiceKey, Sysctls, Timeouts, VirtualService, format_endpoint
from lbcore.ops import (
    AddRealServer,
    AddRule,
    AddService,
    DeleteRealServer,
    DeleteRule,
    DeleteService,
    EditRealServer,
    EditService,
    Op,
    SetSysctls,
    SetTimeouts,
    apply_ops,
)
from lbcore.rules import FirewallMark, firewall_mark
from lbcore.sim import report, tcp
from lbcore.sim.director import F_NOOUTPUT, Conn, Director
from lbcore.sim.dnat import DNATDataPlane
from lbcore.sim.profile import LINUX_6_1, KernelProfile
from lbcore.table import Table

# Bytes the kernel counts per packet (skb->len): the IP header (20 bytes, or 40 for IPv6) plus
# the TCP header with the options Linux sends by default (MSS, SACK, timestamps and window scale
# on SYNs: 40 bytes; timestamps on the rest: 32), or the UDP header (8) and payload.
SYN_BYTES = 40
SEGMENT_BYTES = 32
UDP_HEADER_BYTES = 8


def ip_header_bytes(address: IPAddress) -> int:
    """The IP header's length for a packet to or from ``address``."""
    return 20 if address.version == 4 else 40


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


class SimBackend:
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
        self.nat: DNATDataPlane | None = None
        if dataplane == "iptables":
            self.capabilities = dnat.capabilities(weighted)
            self.nat = DNATDataPlane(self.clock.now, seed)
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
        """Apply every op, or none: all are checked by apply_op before the data plane changes.

        Raises:
            ServiceExists, ServiceNotFound, RealServerExists, RealServerNotFound, InvalidField
        """
        table = apply_ops(self._table, ops)
        if self.nat is not None:
            # The backend commits the nat table for any change but to marks and policy routes.
            if any(not isinstance(op, (AddRule, DeleteRule)) or dnat.RULE_TABLES.get(op.rule.key[0]) == "nat"
                   for op in ops):
                self.nat.commit(table)
            self._table = table
            return
        self.director.run_timers(self.clock.now())
        for op in ops:
            self._carry_out(op)
        self._table = table

    def close(self) -> None:
        """Nothing to release."""

    def _carry_out(self, op: Op) -> None:
        d = self.director
        if isinstance(op, AddService):
            d.add_service(op.service)
        elif isinstance(op, EditService):
            d.edit_service(op.service)
        elif isinstance(op, DeleteService):
            d.delete_service(op.key)
        elif isinstance(op, AddRealServer):
            d.add_real_server(op.key, op.real_server)
        elif isinstance(op, EditRealServer):
            d.edit_real_server(op.key, op.real_server)
        elif isinstance(op, DeleteRealServer):
            d.delete_real_server(op.key, op.address, op.port)
        elif isinstance(op, SetTimeouts):
            d.set_timeouts(op.timeouts)
        elif isinstance(op, SetSysctls):
            d.sysctls = op.sysctls

    # -- time --------------------------------------------------------------------------------------

    def _virtual(self) -> VirtualClock:
        if not isinstance(self.clock, VirtualClock):
            raise InvalidField("SimBackend", "clock", self.clock, "is not a VirtualClock: it cannot be moved")
        return self.clock

    def advance(self, seconds: float) -> None:
        """Move the virtual clock forward, firing the timers that fall due (expiry, GC, stats).

        Raises:
            InvalidField: the clock is not virtual, or ``seconds`` is negative.
        """
        self._virtual().advance(seconds)
        self.director.run_timers(self.clock.now())

    def run_until(self, when: float) -> None:
        """Move the virtual clock forward to ``when``.

        Raises:
            InvalidField: the clock is not virtual, or ``when`` is in the past.
        """
        self._virtual().set(when)
        self.director.run_timers(when)

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
        if self.nat is not None:
            rs = self.nat.pick(proto, caddr, vaddr, vport, mark)
            if rs is None:
                return None
            self._serial += 1
            return Connection(self._serial, proto, caddr, cport, vaddr, vport, rs.address, rs.port or vport, None)
        d = self.director
        ip = ip_header_bytes(vaddr)
        if proto is Protocol.UDP:
            cp = d.packet_in(17, caddr, cport, vaddr, vport, 0, ip + UDP_HEADER_BYTES + payload, mark)
            if cp is not None and not cp.flags & F_NOOUTPUT:
                d.packet_out(cp, 0, ip + UDP_HEADER_BYTES + payload)
        elif proto is Protocol.TCP:
            cp = d.packet_in(6, caddr, cport, vaddr, vport, tcp.SYN, ip + SYN_BYTES, mark)
            if cp is not None:
                if not cp.flags & F_NOOUTPUT:  # NAT: the reply comes back through the director
                    d.packet_out(cp, tcp.SYN | tcp.ACK, ip + SYN_BYTES)
                d.packet_in(6, caddr, cport, vaddr, vport, tcp.ACK, ip + SEGMENT_BYTES, mark)
        else:
            raise InvalidField("SimBackend", "protocol", protocol, "is not simulated for traffic (tcp, udp)")
        if cp is None:
            return None
        self._serial += 1
        return Connection(self._serial, proto, caddr, cport, vaddr, vport, cp.daddr, cp.dport, cp)

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
        if self.nat is not None:
            rs = self.nat.predict(proto, caddr, vaddr, vport, mark)
            return None if rs is None else format_endpoint(rs.address, rs.port or vport)
        dest = self.director.predict(proto.number, caddr, EPHEMERAL_PORTS[0], vaddr, vport, mark)
        if dest is None:
            return None
        return format_endpoint(dest.address, dest.port or vport)

    def disconnect(self, connection: Connection) -> None:
        """Close a TCP connection the way a client does: its FIN first, then the real server's.

        UDP has nothing to close: its entry expires after the udp timeout.
        """
        if connection.protocol is not Protocol.TCP or connection._conn is None:
            return  # with the DNAT data plane, conntrack's entry just ends
        d = self.director
        c = connection
        fin_ack = tcp.FIN | tcp.ACK
        size = ip_header_bytes(c.vip) + SEGMENT_BYTES
        cp = d.packet_in(6, c.client, c.client_port, c.vip, c.vport, fin_ack, size)
        if cp is None:
            return  # IPVS dropped the FIN (its real server was deleted): the server never saw it
        if not cp.flags & F_NOOUTPUT:  # NAT: the real server's ACK and FIN pass the director
            d.packet_out(cp, tcp.ACK, size)
            d.packet_out(cp, fin_ack, size)
        d.packet_in(6, c.client, c.client_port, c.vip, c.vport, tcp.ACK, size)

    # -- ipvsadm's listings (sim only) -------------------------------------------------------------

    def _ipvs(self, what: str) -> Director:
        if self.nat is not None:
            raise InvalidField("SimBackend", "dataplane", self.dataplane, f"has no IPVS to {what}: it is "
                               "the DNAT balancer's nat rules")
        return self.director

    def status(self, **options: bool) -> str:
        """``ipvsadm -Ln`` of the simulated kernel: the guide's "Layer 4 Status". Sim only.

        ``options`` are :func:`lbcore.sim.report.status`'s: stats, rate, thresholds,
        persistent_conn, tun_info, exact, nosort.

        Raises:
            TypeError: an option that ipvsadm -L does not have.
        """
        return report.status(self._ipvs("status"), **options)

    def connections(self, **options: bool) -> str:
        """``ipvsadm -Lnc`` of the simulated kernel: the guide's "Layer 4 Current Connections".

        ``options`` are :func:`lbcore.sim.report.connections`'s: persistent_conn. Sim only.

        Raises:
            TypeError: an option that ipvsadm -Lc does not have.
        """
        return report.connections(self._ipvs("connections"), **options)

    def connection_counts(self, key: ServiceKey) -> dict[tuple[IPAddress, int], int] | None:
        """Each real server's active + inactive connections in service ``key`` (ipvsadm's
        ActiveConn + InActConn), as a graceful drain waits on; {} for no such service. None with
        the DNAT data plane, which, like the iptables backend, counts none.

        .. versionadded:: 0.2
        """
        if self.nat is not None:
            return None
        director = self.director
        director.run_timers(self.clock.now())  # entries due by now expire first
        svc = director.services.get(key)
        if svc is None:
            return {}
        return {(d.address, d.port): d.activeconns + d.inactconns for d in svc.dests}

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
