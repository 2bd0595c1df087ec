"""What SimBackend needs of a data plane, and the IPVS one: the kernel's IPVS (the director).

SimBackend's control plane is :func:`lbcore.ops.prepare` on its own table; a data plane only
carries out what that checked, and answers for the traffic. SimBackend chooses one data plane in
``__init__`` (``dataplane="ipvs"``: :class:`IPVSDataPlane`; ``"iptables"``: the DNAT balancer's
nat rules, :class:`lbcore.sim.dnat.DNATDataPlane`) and asks it everything else without
knowing which it is.
"""

from __future__ import annotations

from typing import Protocol, assert_never

import attrs

from lbcore.enums import Protocol as L4Protocol
from lbcore.errors import InvalidField
from lbcore.model import IPAddress, ServiceKey
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
    Prepared,
    SetSysctls,
    SetTimeouts,
    service_keys,
)
from lbcore.sim import _restore, tcp
from lbcore.sim.director import F_NOOUTPUT, Conn, Director
from lbcore.sim.state import SimService

# Bytes the kernel counts per packet (skb->len): the IP header (20 bytes, or 40 for IPv6) plus
# the TCP header with the options Linux sends by default (MSS, SACK, timestamps and window scale
# on SYNs: 40 bytes; timestamps on the rest: 32), or the UDP header (8) and payload.
SYN_BYTES = 40
SEGMENT_BYTES = 32
UDP_HEADER_BYTES = 8


def ip_header_bytes(address: IPAddress) -> int:
    """The IP header's length for a packet to or from ``address``."""
    return 20 if address.version == 4 else 40


@attrs.frozen
class Reached:
    """Where a connection went: the real server's address and port, and the data plane's entry."""

    address: IPAddress
    port: int
    entry: Conn | None = attrs.field(default=None, eq=False)


class DataPlane(Protocol):
    """One simulated data plane under SimBackend's control plane."""

    def commit(self, prepared: Prepared) -> None:
        """Carry out ops that :func:`~lbcore.ops.prepare` checked, all of them (none can fail here)."""
        ...

    def save(self, prepared: Prepared) -> object:
        """Everything :meth:`commit` of ``prepared`` may change, kept aside so :meth:`restore` can
        bring it back."""
        ...

    def restore(self, saved: object) -> None:
        """Put back the state :meth:`save` kept: after a failed commit, the plane is as it was."""
        ...

    def run_timers(self, now: float) -> None:
        """Fire the timers due by ``now`` (entry expiry, GC, stats)."""
        ...

    def connect(self, protocol: L4Protocol, client: IPAddress, client_port: int, vip: IPAddress, vport: int,
                mark: int, payload: int) -> Reached | None:
        """Open a connection as a client does; None when no real server takes it.

        Raises:
            InvalidField: the data plane does not simulate traffic of ``protocol``.
        """
        ...

    def which(self, protocol: L4Protocol, client: IPAddress, client_port: int, vip: IPAddress, vport: int,
              mark: int) -> Reached | None:
        """Where a new connection would go now, changing nothing."""
        ...

    def disconnect(self, protocol: L4Protocol, client: IPAddress, client_port: int, vip: IPAddress, vport: int,
                   entry: Conn | None) -> None:
        """Close a connection that :meth:`connect` opened, as the client does."""
        ...

    def connection_counts(self, key: ServiceKey) -> dict[tuple[IPAddress, int], int] | None:
        """Each real server's active + inactive connections in service ``key``; None if not counted."""
        ...


class IPVSDataPlane:
    """The kernel's IPVS: a :class:`~lbcore.sim.director.Director` and the packets a client sends."""

    def __init__(self, director: Director) -> None:
        self.director = director

    def commit(self, prepared: Prepared) -> None:
        """Carry out the checked ops on the director, after the timers due by now."""
        self.director.run_timers(self.director.now())
        for op in prepared.ops:
            self._carry_out(op)

    def save(self, prepared: Prepared) -> object:
        """The director's state that ``prepared`` can change, recorded in place
        (:mod:`lbcore.sim._restore`): the services it names with their dests and schedulers, the
        trash, timers and counters; the connection tables and service indexes shallowly.
        """
        d = self.director
        touched = [d.services[k] for k in service_keys(prepared.ops) if k in d.services]
        return _restore.save([d, *touched], opaque=(Conn, SimService),
                             shallow=(*d.entry_tables(), *d.service_tables()))

    def restore(self, saved: object) -> None:
        """Put the director's state back as :meth:`save` recorded it; every object keeps its identity."""
        assert isinstance(saved, list)
        _restore.restore(saved)

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
        elif isinstance(op, (AddRule, DeleteRule)):
            pass  # rules live in SimBackend's table: it marks packets from them before IPVS sees them
        else:
            assert_never(op)

    def run_timers(self, now: float) -> None:
        """Fire the director's timers due by ``now``."""
        self.director.run_timers(now)

    def connect(self, protocol: L4Protocol, client: IPAddress, client_port: int, vip: IPAddress, vport: int,
                mark: int, payload: int) -> Reached | None:
        """TCP: SYN, SYN+ACK (seen by a NAT director only), ACK; UDP: one datagram each way.

        Raises:
            InvalidField: a protocol other than tcp or udp.
        """
        d = self.director
        ip = ip_header_bytes(vip)
        if protocol is L4Protocol.UDP:
            cp = d.packet_in(17, client, client_port, vip, vport, 0, ip + UDP_HEADER_BYTES + payload, mark)
            if cp is not None and not cp.flags & F_NOOUTPUT:
                d.packet_out(cp, 0, ip + UDP_HEADER_BYTES + payload)
        elif protocol is L4Protocol.TCP:
            cp = d.packet_in(6, client, client_port, vip, vport, tcp.SYN, ip + SYN_BYTES, mark)
            if cp is not None:
                if not cp.flags & F_NOOUTPUT:  # NAT: the reply comes back through the director
                    d.packet_out(cp, tcp.SYN | tcp.ACK, ip + SYN_BYTES)
                d.packet_in(6, client, client_port, vip, vport, tcp.ACK, ip + SEGMENT_BYTES, mark)
        else:
            raise InvalidField("SimBackend", "protocol", protocol, "is not simulated for traffic (tcp, udp)")
        return None if cp is None else Reached(cp.daddr, cp.dport, cp)

    def which(self, protocol: L4Protocol, client: IPAddress, client_port: int, vip: IPAddress, vport: int,
              mark: int) -> Reached | None:
        """What the scheduler would pick now; stateful schedulers are asked, not made to pick."""
        dest = self.director.predict(protocol.number, client, client_port, vip, vport, mark)
        return None if dest is None else Reached(dest.address, dest.port or vport)

    def disconnect(self, protocol: L4Protocol, client: IPAddress, client_port: int, vip: IPAddress, vport: int,
                   entry: Conn | None) -> None:
        """The client's FIN first, then the real server's; UDP has nothing to close (it expires)."""
        if protocol is not L4Protocol.TCP or entry is None:
            return
        d = self.director
        fin_ack = tcp.FIN | tcp.ACK
        size = ip_header_bytes(vip) + SEGMENT_BYTES
        cp = d.packet_in(6, client, client_port, vip, vport, fin_ack, size)
        if cp is None:
            return  # IPVS dropped the FIN (its real server was deleted): the server never saw it
        if not cp.flags & F_NOOUTPUT:  # NAT: the real server's ACK and FIN pass the director
            d.packet_out(cp, tcp.ACK, size)
            d.packet_out(cp, fin_ack, size)
        d.packet_in(6, client, client_port, vip, vport, tcp.ACK, size)

    def connection_counts(self, key: ServiceKey) -> dict[tuple[IPAddress, int], int] | None:
        """ActiveConn + InActConn per real server, after the entries due by now expire; {} for no service."""
        director = self.director
        director.run_timers(director.now())
        svc = director.services.get(key)
        if svc is None:
            return {}
        return {(d.address, d.port): d.activeconns + d.inactconns for d in svc.dests}
