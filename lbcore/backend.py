"""The backend SPI: a tiny protocol, and capabilities as data."""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from typing import Protocol, assert_never, runtime_checkable

from lbcore.enums import ForwardMethod, Scheduler
from lbcore.errors import Unsupported
from lbcore.formats.listing import Snapshot
from lbcore.model import IPAddress, RealServer, ServiceKey, VirtualService
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
)
from lbcore.ops import Prepared as Prepared  # the SPI: what a backend carries out
from lbcore.ops import prepare as prepare  # the SPI: the one check, run in every backend's apply
from lbcore.rules import AutoNat, FirewallMark, LoopbackVIP, PolicyRoute, Redirect
from lbcore.table import Table


class Capability(str, enum.Enum):
    """Something a backend can express. A backend lists what it has in ``capabilities``."""

    SCHEDULER_RR = "scheduler-rr"
    SCHEDULER_WRR = "scheduler-wrr"
    SCHEDULER_LC = "scheduler-lc"
    SCHEDULER_WLC = "scheduler-wlc"
    SCHEDULER_SED = "scheduler-sed"
    SCHEDULER_NQ = "scheduler-nq"
    SCHEDULER_FO = "scheduler-fo"
    SCHEDULER_OVF = "scheduler-ovf"
    SCHEDULER_DH = "scheduler-dh"
    SCHEDULER_SH = "scheduler-sh"
    SCHEDULER_MH = "scheduler-mh"
    SCHEDULER_LBLC = "scheduler-lblc"
    SCHEDULER_LBLCR = "scheduler-lblcr"
    SCHEDULER_TWOS = "scheduler-twos"
    SCHEDULER_FLAGS = "scheduler-flags"
    PROTOCOL_TCP = "protocol-tcp"
    PROTOCOL_UDP = "protocol-udp"
    PROTOCOL_SCTP = "protocol-sctp"
    IPV6 = "ipv6"
    FWMARK = "fwmark"
    PERSISTENCE = "persistence"
    PERSISTENCE_NETMASK = "persistence-netmask"
    PERSISTENCE_ENGINE = "persistence-engine"
    ONE_PACKET = "one-packet"
    FORWARD_DR = "forward-dr"
    FORWARD_NAT = "forward-nat"
    FORWARD_TUNNEL = "forward-tunnel"
    THRESHOLDS = "thresholds"
    QUIESCE = "quiesce"  # weight 0
    TIMEOUTS = "timeouts"
    SYSCTLS = "sysctls"
    # The rules of lbcore.rules: netfilter and routing beside the services.
    MARK_RULES = "mark-rules"
    AUTO_NAT = "auto-nat"
    REDIRECT = "redirect"
    POLICY_ROUTING = "policy-routing"
    LOOPBACK_VIP = "loopback-vip"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def for_scheduler(cls, scheduler: Scheduler) -> Capability:
        """The capability of one scheduler."""
        return cls(f"scheduler-{scheduler.value}")


class Backend(Protocol):
    """What lbcore needs of a backend. The core decides; a backend only carries out."""

    @property
    def name(self) -> str:
        """Short name of the backend, such as "sim", "ipvs", "iptables" or "ipvs+iptables"."""
        ...

    #: What the backend can express; an instance may narrow it to what its kernel has.
    capabilities: frozenset[Capability]

    def read(self, keys: Collection[ServiceKey] | None = None) -> Table:
        """Return the state lbcore owns, as the backend holds it now.

        With ``keys``, only those services (the ones that exist) besides timeouts and sysctls:
        enough to check or undo ops on them, at a cost that does not grow with the table.

        Not guaranteed: that it is still so when the caller acts on it (another program may
        change the kernel in between; apply() then raises).
        """
        ...

    def apply(self, ops: Sequence[Op]) -> None:
        """Apply every op, or none.

        A backend checks ``ops`` with :func:`~lbcore.prepare` against the state it reads for the change
        (under its own lock, where it has one) and carries out only the :class:`~lbcore.Prepared` ops it
        returns, taking back the done ones with ``Prepared.undo`` if a later one fails.

        Raises:
            ServiceExists, ServiceNotFound, RealServerExists, RealServerNotFound:
                the state moved since read(); nothing was changed.
            BackendError: the backend failed; partial work was rolled back.
        """
        ...

    def close(self) -> None:
        """Release what the backend holds (sockets, handles). Not guaranteed to be idempotent."""
        ...


def _service_needs(svc: VirtualService) -> set[Capability]:
    needs = {Capability.for_scheduler(svc.scheduler)}
    if svc.fwmark:
        needs.add(Capability.FWMARK)
    elif svc.protocol is not None:
        needs.add(Capability(f"protocol-{svc.protocol.value}"))
    if svc.family == 6:
        needs.add(Capability.IPV6)
    if svc.flags:
        needs.add(Capability.SCHEDULER_FLAGS)
    if svc.one_packet:
        needs.add(Capability.ONE_PACKET)
    if svc.persistence is not None:
        needs.add(Capability.PERSISTENCE)
        if svc.persistence.netmask is not None:
            needs.add(Capability.PERSISTENCE_NETMASK)
        if svc.persistence.engine is not None:
            needs.add(Capability.PERSISTENCE_ENGINE)
    return needs


_FORWARD = {
    ForwardMethod.DR: Capability.FORWARD_DR,
    ForwardMethod.NAT: Capability.FORWARD_NAT,
    ForwardMethod.TUNNEL: Capability.FORWARD_TUNNEL,
}


def _real_server_needs(rs: RealServer) -> set[Capability]:
    needs = {_FORWARD[rs.forward]}
    if rs.u_threshold or rs.l_threshold:
        needs.add(Capability.THRESHOLDS)
    if rs.weight == 0:
        needs.add(Capability.QUIESCE)
    if rs.address.version == 6:
        needs.add(Capability.IPV6)
    return needs


_RULE_CAPABILITY = {
    FirewallMark: Capability.MARK_RULES,
    AutoNat: Capability.AUTO_NAT,
    Redirect: Capability.REDIRECT,
    PolicyRoute: Capability.POLICY_ROUTING,
    LoopbackVIP: Capability.LOOPBACK_VIP,
}


def needs(op: Op) -> set[Capability]:
    """The capabilities a backend must have to carry out ``op``."""
    if isinstance(op, (AddService, EditService)):
        return _service_needs(op.service)
    if isinstance(op, (AddRealServer, EditRealServer)):
        return _real_server_needs(op.real_server)
    if isinstance(op, SetTimeouts):
        return {Capability.TIMEOUTS}
    if isinstance(op, SetSysctls):
        return {Capability.SYSCTLS}
    if isinstance(op, (AddRule, DeleteRule)):
        return {_RULE_CAPABILITY[type(op.rule)]}
    if isinstance(op, (DeleteService, DeleteRealServer)):
        return set()  # what could be added can be deleted
    assert_never(op)


def require(backend: Backend, op: Op) -> None:
    """Refuse ``op`` before anything changes if ``backend`` cannot express it.

    Raises:
        Unsupported: naming the backend, the first missing capability (in a stable order) and the op.
    """
    missing = sorted(needs(op) - backend.capabilities)
    if missing:
        why = backend.why_not(missing[0]) if isinstance(backend, ExplainsRefusals) else None
        raise Unsupported(backend.name, missing[0], f"{why}; needed by {op}" if why else f"needed by {op}")


ALL_CAPABILITIES = frozenset(Capability)
#: What the rules of lbcore.rules need: netfilter and policy routing.
RULE_CAPABILITIES = frozenset(_RULE_CAPABILITY.values())


# -- optional features: protocols a backend declares by inheriting them (isinstance, never getattr) --


@runtime_checkable
class ExplainsRefusals(Protocol):
    """An optional feature: a backend that can say why it lacks a capability, and what has it.

    .. versionadded:: 0.3
    """

    def why_not(self, capability: Capability) -> str | None:
        """Why the backend lacks ``capability`` and what would have it, or None to add nothing."""
        ...


@runtime_checkable
class ConnectionCounts(Protocol):
    """An optional feature: the backend counts each real server's connections (a drain waits on them).

    Check with ``isinstance(backend, ConnectionCounts)``; sim, ipvs and a composite whose first
    backend counts them have it.

    .. versionadded:: 0.3
    """

    def connection_counts(self, key: ServiceKey) -> dict[tuple[IPAddress, int], int] | None:
        """Each real server's active + inactive connections in service ``key``; {} for no such
        service; None when this instance counts none (a sim on the DNAT data plane)."""
        ...


@runtime_checkable
class Listings(Protocol):
    """Optional feature: ipvsadm's listings of the backend's data plane.

    A backend with a data plane that ipvsadm could list (the simulator's IPVS, the kernel's)
    produces a neutral :class:`~lbcore.formats.listing.Snapshot`, and renders it with
    :mod:`lbcore.formats.listing`, so "Layer 4 Status" and "Layer 4 Current Connections" read the
    same from every such backend. Ask with ``isinstance(backend, Listings)``, never ``getattr``.

    Not guaranteed: the order of connections (the kernel's is its hash table's), and that the
    snapshot is atomic (services and connections are read one after the other).

    .. versionadded:: 0.3
    """

    def snapshot(self) -> Snapshot:
        """Services with their counters, connections, timeouts: what the listings show now.

        Raises:
            BackendError: the data plane could not be read.
        """

    def status(self, *, stats: bool = False, rate: bool = False, thresholds: bool = False,
               persistent_conn: bool = False, tun_info: bool = False, exact: bool = False,
               nosort: bool = False) -> str:
        """``ipvsadm -Ln`` and its variants: the guide's "Layer 4 Status".

        The options are :func:`lbcore.formats.listing.status`'s.

        Raises:
            BackendError: the data plane could not be read.
        """

    def connections(self, *, persistent_conn: bool = False) -> str:
        """``ipvsadm -Lnc``: the guide's "Layer 4 Current Connections".

        Raises:
            BackendError: the data plane could not be read.
        """
