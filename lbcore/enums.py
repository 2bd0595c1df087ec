"""The closed vocabularies of the model; values are the kernel's (or ipvsadm's) own strings."""

from __future__ import annotations

import enum


class Protocol(str, enum.Enum):
    """Transport protocol of a virtual service (ipvsadm -t, -u, --sctp-service)."""

    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"

    @property
    def number(self) -> int:
        """The IP protocol number (IPPROTO_*)."""
        return _PROTO_NUMBERS[self]

    def __str__(self) -> str:
        return self.value


_PROTO_NUMBERS = {Protocol.TCP: 6, Protocol.UDP: 17, Protocol.SCTP: 132}


class Scheduler(str, enum.Enum):
    """An IPVS scheduler, by its kernel module name (ip_vs_<name>)."""

    RR = "rr"
    WRR = "wrr"
    LC = "lc"
    WLC = "wlc"
    SED = "sed"
    NQ = "nq"
    FO = "fo"
    OVF = "ovf"
    DH = "dh"
    SH = "sh"
    MH = "mh"
    LBLC = "lblc"
    LBLCR = "lblcr"
    TWOS = "twos"

    def __str__(self) -> str:
        return self.value


class SchedulerFlag(str, enum.Enum):
    """Scheduler flags (ipvsadm -b); the kernel stores them as IP_VS_SVC_F_SCHED1/2/3."""

    SH_FALLBACK = "sh-fallback"
    SH_PORT = "sh-port"
    MH_FALLBACK = "mh-fallback"
    MH_PORT = "mh-port"

    @property
    def bit(self) -> int:
        """The service flag bit; fallback is SCHED1 (0x08), port is SCHED2 (0x10)."""
        return 0x08 if self in (SchedulerFlag.SH_FALLBACK, SchedulerFlag.MH_FALLBACK) else 0x10

    @property
    def scheduler(self) -> Scheduler:
        """The one scheduler this flag belongs to."""
        return Scheduler.SH if self.value.startswith("sh") else Scheduler.MH

    def __str__(self) -> str:
        return self.value


class ForwardMethod(str, enum.Enum):
    """How the director forwards to a real server (ipvsadm -g, -m, -i)."""

    DR = "dr"  # direct routing, "Route" (IP_VS_CONN_F_DROUTE)
    NAT = "nat"  # masquerading, "Masq" (IP_VS_CONN_F_MASQ)
    TUNNEL = "tunnel"  # IP-in-IP, GUE or GRE, "Tunnel" (IP_VS_CONN_F_TUNNEL)

    @property
    def kernel_code(self) -> int:
        """IP_VS_CONN_F_* forwarding code."""
        return _FWD_CODES[self]

    @property
    def ipvsadm_name(self) -> str:
        """The Forward column of ipvsadm -Ln (Route, Masq or Tunnel)."""
        return _FWD_NAMES[self]

    def __str__(self) -> str:
        return self.value


_FWD_CODES = {ForwardMethod.NAT: 0, ForwardMethod.TUNNEL: 2, ForwardMethod.DR: 3}
_FWD_NAMES = {ForwardMethod.NAT: "Masq", ForwardMethod.TUNNEL: "Tunnel", ForwardMethod.DR: "Route"}


class TunnelType(str, enum.Enum):
    """Encapsulation of a tunnel real server (ipvsadm --tun-type)."""

    IPIP = "ipip"
    GUE = "gue"
    GRE = "gre"

    def __str__(self) -> str:
        return self.value


class TunnelChecksum(str, enum.Enum):
    """Checksum option of a GUE or GRE tunnel (ipvsadm --tun-nocsum/--tun-csum/--tun-remcsum)."""

    NOCSUM = "nocsum"
    CSUM = "csum"
    REMCSUM = "remcsum"  # GUE only

    def __str__(self) -> str:
        return self.value


class PersistenceEngine(str, enum.Enum):
    """A persistence engine (ipvsadm --pe); the kernel has only "sip"."""

    SIP = "sip"

    def __str__(self) -> str:
        return self.value
