"""The model: attrs value objects, validated on construction.

Validation of one field lives in its validator, of several fields of one object in that object's
``_check``; checks across objects and state live in :func:`lbcore.ops.apply_op`. Every refusal is an
:class:`~lbcore.errors.InvalidField` naming the class, the field and the value.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, cast

import attrs

from lbcore._fields import (
    any_port,
    as_address,
    ascii_int,
    boolean,
    int_in,
    member_of,
    optional_instance_of,
    refuse,
    to_enum,
    unicast,
    value_object,
)
from lbcore.enums import (
    ForwardMethod,
    PersistenceEngine,
    Protocol,
    Scheduler,
    SchedulerFlag,
    TunnelChecksum,
    TunnelType,
)
from lbcore.errors import InvalidField

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

INT_MAX = 2**31 - 1
U32_MAX = 2**32 - 1
#: ipvsadm's -p range: 1 s .. 31 days.
PERSISTENCE_TIMEOUT_MAX = 2678400
#: ipvsadm's -p without a value (IPVS_SVC_PERSISTENT_TIMEOUT, 6 minutes).
DEFAULT_PERSISTENCE_TIMEOUT = 360


# -- field helpers ---------------------------------------------------------------------------------

def _as_forward_method(value: object) -> Any:
    return to_enum(ForwardMethod, value)


def _as_persistence_engine(value: object) -> Any:
    return to_enum(PersistenceEngine, value)


def _as_protocol(value: object) -> Any:
    return to_enum(Protocol, value)


def _as_scheduler(value: object) -> Any:
    return to_enum(Scheduler, value)


def _as_tunnel_checksum(value: object) -> Any:
    return to_enum(TunnelChecksum, value)


def _as_tunnel_type(value: object) -> Any:
    return to_enum(TunnelType, value)


def format_endpoint(address: IPAddress, port: int) -> str:
    """``10.0.0.1:80`` or ``[2001:db8::1]:80``, as ipvsadm prints them."""
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


# -- the model -------------------------------------------------------------------------------------


@value_object
@attrs.frozen
class Tunnel:
    """Encapsulation of a tunnel-mode real server (ipvsadm --tun-type, --tun-port, ``--tun-*csum``).

    Args:
        type: ipip, gue or gre (ipvsadm --tun-type).
        port: the GUE destination port (--tun-port); 0 for ipip and gre.
        checksum: nocsum, csum (gue, gre) or remcsum (gue only) (--tun-nocsum, --tun-csum, --tun-remcsum).

    .. versionadded:: 0.1
    """

    type: TunnelType = attrs.field(
        default=TunnelType.IPIP, converter=_as_tunnel_type, validator=member_of(TunnelType)
    )
    port: int = attrs.field(default=0, validator=any_port)
    checksum: TunnelChecksum = attrs.field(
        default=TunnelChecksum.NOCSUM,
        converter=_as_tunnel_checksum,
        validator=member_of(TunnelChecksum),
    )

    def __attrs_post_init__(self) -> None:
        fields = attrs.fields(Tunnel)
        if self.type is TunnelType.GUE and self.port == 0:
            refuse(self, fields.port, self.port, "must be set for a GUE tunnel (1..65535)")
        if self.type is not TunnelType.GUE and self.port != 0:
            refuse(self, fields.port, self.port, f"is only for GUE tunnels, not {self.type}")
        if self.type is TunnelType.IPIP and self.checksum is not TunnelChecksum.NOCSUM:
            refuse(self, fields.checksum, self.checksum, "is only for GUE and GRE tunnels")
        if self.type is TunnelType.GRE and self.checksum is TunnelChecksum.REMCSUM:
            refuse(self, fields.checksum, self.checksum, "is only for GUE tunnels")


@value_object
@attrs.frozen
class RealServer:
    """A real server of a virtual service (ipvsadm -a/-e ... -r).

    Args:
        address: the real server's address.
        port: its port; DR and tunnel real servers must use the virtual port. 0 for a firewall-mark
            service keeps the packet's own port.
        weight: 0 (quiesced) .. 2147483647.
        forward: DR, NAT or TUNNEL.
        u_threshold: upper connection threshold (0: none); reaching it sets the overload flag.
        l_threshold: lower connection threshold (0: 3/4 of the upper one).
        tunnel: encapsulation, for TUNNEL only (default IP-in-IP).

    .. versionadded:: 0.1
    """

    address: IPAddress = attrs.field(converter=as_address, validator=unicast)
    port: int = attrs.field(validator=any_port)
    weight: int = attrs.field(default=1, validator=int_in(0, INT_MAX, "a weight"))
    forward: ForwardMethod = attrs.field(
        default=ForwardMethod.DR,
        converter=_as_forward_method,
        validator=member_of(ForwardMethod),
    )
    u_threshold: int = attrs.field(default=0, validator=int_in(0, INT_MAX, "a threshold"))
    l_threshold: int = attrs.field(default=0, validator=int_in(0, INT_MAX, "a threshold"))
    tunnel: Tunnel | None = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        fields = attrs.fields(RealServer)
        if self.l_threshold > self.u_threshold:
            # The kernel refuses l > u with ERANGE even when u is 0.
            refuse(
                self,
                fields.l_threshold,
                self.l_threshold,
                f"is above u_threshold {self.u_threshold}",
            )
        if self.tunnel is not None:
            if not isinstance(self.tunnel, Tunnel):
                refuse(self, fields.tunnel, self.tunnel, "is not a Tunnel")
            if self.forward is not ForwardMethod.TUNNEL:
                refuse(self, fields.tunnel, self.tunnel, f"is only for tunnel, not {self.forward}")
        elif self.forward is ForwardMethod.TUNNEL:
            object.__setattr__(self, "tunnel", Tunnel())

    @property
    def key(self) -> tuple[IPAddress, int]:
        """The identity of a real server within its service, as (address, port)."""
        return (self.address, self.port)

    @property
    def endpoint(self) -> str:
        """``address:port`` as ipvsadm prints it."""
        return format_endpoint(self.address, self.port)


_HOST_MASK = ipaddress.IPv4Address("255.255.255.255")


def _as_netmask(value: object) -> object:
    if isinstance(value, str):
        number = ascii_int(value)
        if number is not None:
            value = number
        elif value.isascii():
            try:
                value = ipaddress.IPv4Address(value)
            except ValueError:
                return value
    # A host mask is the kernel's default (/32 for IPv4, /128 for IPv6) and reads back as none
    # (ipvsadm-save drops -M for it; so do the ipvs codec and the iptables layout), so it is none.
    if value == _HOST_MASK or (isinstance(value, int) and not isinstance(value, bool) and value == 128):
        return None
    return value


def _netmask(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None or isinstance(value, ipaddress.IPv4Address):
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 128:
        refuse(inst, attribute, value, "is not an IPv4 netmask or an IPv6 prefix length (1..128)")


@value_object
@attrs.frozen
class Persistence:
    """Source-IP persistence of a virtual service (ipvsadm -p, -M, --pe).

    Args:
        timeout: seconds a client's template lives after its last new connection (1..2678400).
        netmask: clients within one network share a template: an IPv4 mask
            (``"255.255.255.0"``) for IPv4 services, a prefix length (64) for IPv6 ones.
            None means one template per client address; so does a host mask (255.255.255.255,
            or 128), which is stored as None: the kernel reads it back as its default.
        engine: a persistence engine (``"sip"``), or None.

    .. versionadded:: 0.1
    """

    timeout: int = attrs.field(
        default=DEFAULT_PERSISTENCE_TIMEOUT,
        validator=int_in(1, PERSISTENCE_TIMEOUT_MAX, "a persistence timeout in seconds"),
    )
    netmask: ipaddress.IPv4Address | int | None = attrs.field(
        default=None, converter=_as_netmask, validator=_netmask
    )
    engine: PersistenceEngine | None = attrs.field(
        default=None,
        converter=attrs.converters.optional(_as_persistence_engine),
        validator=attrs.validators.optional(member_of(PersistenceEngine)),
    )

    def prefix(self, family: int) -> ipaddress.IPv4Address | int:
        """The netmask as the kernel stores it for ``family``: a mask (IPv4) or a length (IPv6)."""
        if self.netmask is not None:
            return self.netmask
        return ipaddress.IPv4Address("255.255.255.255") if family == 4 else 128


def _family(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in (4, 6) or isinstance(value, bool):
        refuse(inst, attribute, value, "is not 4 or 6")


@value_object
@attrs.frozen
class ServiceKey:
    """The identity of a virtual service: (protocol, address, port) or (family, fwmark).

    Make one with :attr:`VirtualService.key`; the fields are checked one by one, not together.
    """

    family: int = attrs.field(validator=_family)
    protocol: Protocol | None = attrs.field(
        converter=attrs.converters.optional(_as_protocol), validator=attrs.validators.optional(member_of(Protocol)))
    address: IPAddress | None = attrs.field(converter=as_address, validator=attrs.validators.optional(unicast))
    port: int = attrs.field(validator=any_port)
    fwmark: int = attrs.field(validator=int_in(0, U32_MAX, "a firewall mark (0: none)"))

    def __str__(self) -> str:
        return self.ipvsadm

    @property
    def ipvsadm(self) -> str:
        """The service as ipvsadm names it, e.g. ``-t 10.0.0.1:80``, ``-f 1``, ``-f 1 -6``."""
        if self.fwmark:
            return f"-f {self.fwmark}" + (" -6" if self.family == 6 else "")
        assert self.protocol is not None and self.address is not None
        option = {Protocol.TCP: "-t", Protocol.UDP: "-u", Protocol.SCTP: "--sctp-service"}
        return f"{option[self.protocol]} {format_endpoint(self.address, self.port)}"


def _as_flags(value: object) -> object:
    if isinstance(value, (str, SchedulerFlag)):
        value = (value,)
    if isinstance(value, Iterable):
        items = list(value)
        converted = [to_enum(SchedulerFlag, v) for v in items]
        if all(isinstance(v, SchedulerFlag) for v in converted):
            return frozenset(converted)
    return value


def _flags(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, frozenset):
        names = ", ".join(m.value for m in SchedulerFlag)
        refuse(inst, attribute, value, f"are not scheduler flags ({names})")


def _as_real_servers(value: object) -> object:
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping)):
        return tuple(value)
    return value


def _real_servers(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        refuse(inst, attribute, value, "is not a list of RealServer")
    for rs in value:
        if not isinstance(rs, RealServer):
            refuse(inst, attribute, rs, "is not a RealServer")


@value_object
@attrs.frozen
class VirtualService:
    """A layer-4 virtual service: by protocol, address and port, or by firewall mark.

    Args:
        protocol: tcp, udp or sctp; None for a firewall-mark service.
        address: the virtual IP; None for a firewall-mark service.
        port: the virtual port; 0 (every port) only with persistence, and always 0 for fwmark.
        fwmark: the firewall mark (1..4294967295) of a fwmark service, else None.
        family: 4 or 6. Derived from ``address``; give it for an IPv6 fwmark service.
        scheduler: the kernel scheduler's name (default wlc, as ipvsadm's).
        flags: scheduler flags (sh-fallback, sh-port for sh; mh-fallback, mh-port for mh).
        persistence: source-IP persistence, or None.
        one_packet: schedule every UDP datagram on its own (ipvsadm -o).
        real_servers: the real servers, in the order they are added.

    Raises:
        InvalidField: a field, or a combination of fields, the kernel or ipvsadm refuses.

    .. versionadded:: 0.1
    """

    protocol: Protocol | None = attrs.field(
        default=None,
        converter=attrs.converters.optional(_as_protocol),
        validator=attrs.validators.optional(member_of(Protocol)),
    )
    address: IPAddress | None = attrs.field(
        default=None, converter=as_address, validator=attrs.validators.optional(unicast)
    )
    port: int = attrs.field(default=0, validator=any_port)
    fwmark: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(int_in(1, U32_MAX, "a firewall mark"))
    )
    family: int = attrs.field(default=0, kw_only=True)
    scheduler: Scheduler = attrs.field(
        default=Scheduler.WLC,
        converter=_as_scheduler,
        validator=member_of(Scheduler),
        kw_only=True,
    )
    flags: frozenset[SchedulerFlag] = attrs.field(
        factory=frozenset, converter=_as_flags, validator=_flags, kw_only=True
    )
    persistence: Persistence | None = attrs.field(
        default=None,
        validator=optional_instance_of(Persistence),
        kw_only=True,
    )
    one_packet: bool = attrs.field(default=False, validator=boolean, kw_only=True)
    real_servers: tuple[RealServer, ...] = attrs.field(
        default=(), converter=_as_real_servers, validator=_real_servers, kw_only=True
    )

    def __attrs_post_init__(self) -> None:
        fields = attrs.fields(VirtualService)
        if self.fwmark is None:
            if self.protocol is None:
                refuse(self, fields.protocol, None, "must be set unless fwmark is")
            if self.address is None:
                refuse(self, fields.address, None, "must be set unless fwmark is")
            assert self.address is not None
            if self.family not in (0, self.address.version):
                refuse(self, fields.family, self.family, f"does not match {self.address}")
            object.__setattr__(self, "family", self.address.version)
            if self.port == 0 and self.persistence is None:
                refuse(self, fields.port, 0, "is only allowed with persistence")
        else:
            if self.protocol is not None:
                refuse(self, fields.protocol, self.protocol, "must be None for a fwmark service")
            if self.address is not None:
                refuse(self, fields.address, self.address, "must be None for a fwmark service")
            if self.port != 0:
                refuse(self, fields.port, self.port, "must be 0 for a fwmark service")
            if self.family not in (0, 4, 6):
                refuse(self, fields.family, self.family, "is not 4 or 6")
            object.__setattr__(self, "family", self.family or 4)
        for flag in self.flags:
            if flag.scheduler is not self.scheduler:
                refuse(self, fields.flags, flag.value, f"is not a flag of scheduler {self.scheduler}")
        if self.one_packet and self.protocol not in (None, Protocol.UDP):
            refuse(self, fields.one_packet, True, f"is only for udp or fwmark, not {self.protocol}")
        if self.persistence is not None:
            netmask = self.persistence.netmask
            if self.family == 4 and isinstance(netmask, int):
                refuse(self, fields.persistence, netmask, "is a prefix length: IPv4 takes a mask")
            if self.family == 6 and isinstance(netmask, ipaddress.IPv4Address):
                refuse(self, fields.persistence, netmask, "is an IPv4 mask: IPv6 takes a length")
        seen: set[tuple[IPAddress, int]] = set()
        for rs in self.real_servers:
            if not isinstance(rs, RealServer):
                refuse(self, fields.real_servers, rs, "is not a RealServer")
            self.check_real_server(rs)
            if rs.key in seen:
                refuse(self, fields.real_servers, rs.endpoint, "appears twice")
            seen.add(rs.key)

    def check_real_server(self, rs: RealServer) -> None:
        """Refuse a real server this service cannot have.

        Raises:
            InvalidField: the real server's family or port does not fit this service.
        """
        fields = attrs.fields(RealServer)
        if rs.address.version != self.family and rs.forward is not ForwardMethod.TUNNEL:
            # The kernel mixes families only for tunnels (IPVS_DEST_ATTR_ADDR_FAMILY).
            refuse(
                rs, fields.address, rs.address, f"is IPv{rs.address.version} under an IPv"
                f"{self.family} {rs.forward} service {self.key} (only tunnel mixes families)"
            )
        if self.fwmark is None and rs.forward is not ForwardMethod.NAT and rs.port != self.port:
            refuse(
                rs, fields.port, rs.port,
                f"differs from the virtual port {self.port}: {rs.forward} cannot change ports",
            )

    @property
    def key(self) -> ServiceKey:
        """The service's identity."""
        return ServiceKey(self.family, self.protocol, self.address, self.port, self.fwmark or 0)

    @property
    def settings(self) -> VirtualService:
        """This service without its real servers (what add_service and edit_service carry)."""
        return attrs.evolve(self, real_servers=())

    def real_server(self, address: object, port: int) -> RealServer | None:
        """The real server with this address and port, or None."""
        key = (as_address(address), port)
        return next((rs for rs in self.real_servers if rs.key == key), None)


#: The most seconds the kernel takes where it stores jiffies in a C int: INT_MAX / HZ, with HZ 250
#: as Debian's kernels have it (ip_vs_set_timeout(); proc_dointvec_jiffies() refuses more).
JIFFIES_SECONDS_MAX = INT_MAX // 250


def _timeout(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    int_in(1, JIFFIES_SECONDS_MAX, "a timeout in seconds")(inst, attribute, value)


@value_object
@attrs.frozen
class Timeouts:
    """The global connection timeouts (ipvsadm --set tcp tcpfin udp).

    Args:
        tcp: seconds an established TCP connection's entry lives without a packet.
        tcpfin: seconds a TCP connection's entry lives after the FIN.
        udp: seconds a UDP connection's entry lives without a datagram.

    .. versionadded:: 0.1
    """

    tcp: int = attrs.field(default=900, validator=_timeout)
    tcpfin: int = attrs.field(default=120, validator=_timeout)
    udp: int = attrs.field(default=300, validator=_timeout)


@value_object
@attrs.frozen
class Sysctls:
    """The IPVS sysctls (net.ipv4.vs.*) that change which real server a connection reaches.

    Args:
        expire_nodest_conn: drop a connection's entry at its next packet once its real server is gone.
        expire_quiescent_template: expire a persistence template once its real server's weight is 0.
        conn_reuse_mode: how a new connection reusing a port of an old entry is scheduled (0..3).
        sloppy_tcp: take over TCP connections IPVS did not see start (e.g. after a failover).
        sloppy_sctp: the same for SCTP.
        lblc_expiration: seconds the lblc scheduler keeps an unused destination entry.
        lblcr_expiration: seconds the lblcr scheduler keeps an unused destination set.

    .. versionadded:: 0.1
    """

    expire_nodest_conn: bool = attrs.field(default=False, validator=boolean)
    expire_quiescent_template: bool = attrs.field(default=False, validator=boolean)
    conn_reuse_mode: int = attrs.field(default=1, validator=int_in(0, 3, "a conn_reuse_mode"))
    sloppy_tcp: bool = attrs.field(default=False, validator=boolean)
    sloppy_sctp: bool = attrs.field(default=False, validator=boolean)
    # proc_dointvec_jiffies (ip_vs_lblc.c, ip_vs_lblcr.c) refuses more than INT_MAX / HZ seconds.
    lblc_expiration: int = attrs.field(default=86400, validator=int_in(1, JIFFIES_SECONDS_MAX, "seconds"))
    lblcr_expiration: int = attrs.field(default=86400, validator=int_in(1, JIFFIES_SECONDS_MAX, "seconds"))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The sysctl names lbcore models."""
        return tuple(f.name for f in attrs.fields(cls))

    def with_value(self, name: str, value: object) -> Sysctls:
        """A copy with one sysctl set from its text or Python value.

        Raises:
            InvalidField: the name is not a modelled sysctl, or the value does not fit it.
        """
        if not isinstance(name, str) or name not in self.names():
            raise InvalidField("Sysctls", str(name), value, f"is not a modelled sysctl ({', '.join(self.names())})")
        current = getattr(self, name)
        value = cast(Any, value)
        if isinstance(current, bool) and isinstance(value, (str, int)) and str(value) in ("0", "1"):
            value = str(value) == "1"
        elif isinstance(value, str):
            number = ascii_int(value[1:] if value.startswith("-") else value)
            if number is not None:  # a sysctl's text is ASCII digits, perhaps signed (as the kernel writes it)
                value = -number if value.startswith("-") else number
        changed: dict[str, Any] = {name: value}
        return attrs.evolve(self, **changed)
