"""The DNAT balancer: a virtual service as netfilter nat rules, for hosts without IPVS.

This module decides *which* rules a service becomes, in neutral terms; the iptables backend
encodes and writes them (chain and list names, xt matches: ``lbcore_iptables``) and the
simulator's :class:`~lbcore.sim.dnat.DNATDataPlane` evaluates them, so both follow one layout:

- persistence: for each real server, in order, ``-m recent --rcheck --seconds T --reap`` against
  that server's list (one per real server of a service) jumps to it; the jump ``--set``\\ s the list
  again, so the timeout runs from a client's last new connection (xt_recent);
- then one :class:`Pick` per real server of positive weight, in order: rr becomes the statistic
  match's nth mode (``--every n-i --packet 0``: the i-th of the n takes the first connection
  that reaches it, then every (n-i)-th, so the real servers take turns in their order); weighted random (opted into, see
  :data:`WEIGHTED_RANDOM`) becomes ``--mode random --probability w_i / (w_i + ... + w_n)``;
  the last pick takes what is left.

A real server of weight 0 gets no pick, but keeps its persistence rule, as IPVS keeps a quiesced
server's templates. Only the first packet of a connection traverses nat (conntrack remembers the
rest), so everything here is per connection, as in IPVS.

.. versionadded:: 0.2
"""

from __future__ import annotations

import attrs

from lbcore.backend import RULE_CAPABILITIES, Capability
from lbcore.errors import InvalidField
from lbcore.model import RealServer, VirtualService

#: What the DNAT balancer can express. Everything else (lc, wlc, sh, ..., DR and tunnel,
#: thresholds, one-packet, IPv6, SCTP) is refused with Unsupported.
DNAT_CAPABILITIES = frozenset({
    Capability.SCHEDULER_RR,
    Capability.PROTOCOL_TCP,
    Capability.PROTOCOL_UDP,
    Capability.FWMARK,
    Capability.PERSISTENCE,
    Capability.PERSISTENCE_NETMASK,
    Capability.FORWARD_NAT,
    Capability.QUIESCE,
})

#: The ``weighted`` option that accepts wrr services as weighted random (each real server gets
#: its weight's share on average, not in a fixed order). Without it wrr is refused, since no
#: netfilter match interleaves by weight.
WEIGHTED_RANDOM = "random"


def capabilities(weighted: str | None) -> frozenset[Capability]:
    """The DNAT balancer's capabilities; wrr only when weighted random is accepted for it."""
    extra = {Capability.SCHEDULER_WRR} if weighted == WEIGHTED_RANDOM else set()
    return DNAT_CAPABILITIES | RULE_CAPABILITIES | extra


#: The netfilter table of each kind of rule that netfilter holds (policy routes and loopback VIPs
#: are rtnetlink's): a change to one of them is a commit of that table.
RULE_TABLES = {"mark": "mangle", "redirect": "nat", "auto-nat": "nat"}


def service_rank(service: VirtualService) -> int:
    """0, 1 or 2: IPVS looks a packet up by firewall mark first, then by port, then by a port-0
    service (ip_vs_in), and the DNAT balancer's jumps keep that order."""
    return 0 if service.fwmark else (2 if service.port == 0 else 1)


def random_threshold(probability: float) -> int:
    """The statistic match's stored probability: iptables keeps ``lround(0x80000000 * p)``.

    The kernel matches when ``get_random_u32() & 0x7FFFFFFF`` is below it (xt_statistic.c), so
    the simulator must use this value, not ``probability``.

    Raises:
        InvalidField: ``probability`` is outside 0..1.
    """
    if not 0.0 <= probability <= 1.0:
        raise InvalidField("Pick", "probability", probability, "is not a probability (0..1)")
    return int(0x80000000 * probability + 0.5)  # lround() rounds halves away from zero


@attrs.frozen
class Pick:
    """One distribution rule: the real server it jumps to and when it matches.

    ``every`` > 0: nth mode, ``--every every --packet packet``. ``threshold`` set: random mode.
    Neither: it always matches (the last pick).
    """

    real_server: RealServer
    every: int = 0
    packet: int = 0
    threshold: int | None = None


def picks(service: VirtualService) -> list[Pick]:
    """The distribution rules of ``service``, in chain order."""
    live = [rs for rs in service.real_servers if rs.weight > 0]
    n = len(live)
    out: list[Pick] = []
    for i, rs in enumerate(live):
        if i == n - 1:
            out.append(Pick(rs))
        elif service.scheduler.value == "rr":
            out.append(Pick(rs, every=n - i))
        else:
            rest = sum(r.weight for r in live[i:])
            out.append(Pick(rs, threshold=random_threshold(rs.weight / rest)))
    return out
