"""Where each object lbcore owns lives in netfilter: chains, jumps and descriptor comments.

Every rule lbcore writes sits in a chain named ``LBCORE-*``. Built-in chains reach them through
one jump each, which carries the comment ``lbcore`` so that it is found and never confused with an
operator's rule. Each owned object (a service, a real server, a rule of lbcore.rules) is one jump
in a *dispatch* chain plus a chain of its own; the jump carries the object's *descriptor* in
comment matches: its ipvsadm line (``-A -t 192.0.2.1:80 -s rr``, ``-a ... -r ... -m -w 1``) or its
:meth:`~lbcore.rules.FirewallMark.text`. Reading the state decodes comments of lbcore's dispatch
chains only; it never lists an operator's chains, nor parses a match.

    nat     PREROUTING  -> LBCORE-SERVICES  one jump per service (by VIP, port or mark)
            OUTPUT      -> LBCORE-SERVICES     -> LBCORE-S-<svc>   persistence, then picks
                                               -> LBCORE-R-<svc>-<rs>  --set, DNAT
            PREROUTING  -> LBCORE-REDIRECT  the Redirects, one rule each
            POSTROUTING -> LBCORE-POSTROUTING the AutoNats
    mangle  PREROUTING  -> LBCORE-MARK       one jump per FirewallMark, in mark order
                                               -> LBCORE-M-<mark>  RETURN exceptions, then MARK
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from lbcore import dnat
from lbcore.enums import Protocol
from lbcore.ipvsadm import real_server_options, service_suffix
from lbcore.model import RealServer, ServiceKey, VirtualService, format_endpoint
from lbcore.rules import AutoNat, FirewallMark, Redirect, Rule
from lbcore_iptables import _entries as e

OWNER_COMMENT = "lbcore"
COMMENT_MAX = 255
MULTIPORT_MAX = 15

SERVICES = "LBCORE-SERVICES"
REDIRECTS = "LBCORE-REDIRECT"
POSTROUTING = "LBCORE-POSTROUTING"
MARKS = "LBCORE-MARK"

#: (table, built-in chain, lbcore's chain): the jumps lbcore adds to built-in chains.
HOOKS = (
    ("nat", "PREROUTING", SERVICES),
    ("nat", "OUTPUT", SERVICES),
    ("nat", "PREROUTING", REDIRECTS),
    ("nat", "POSTROUTING", POSTROUTING),
    ("mangle", "PREROUTING", MARKS),
)

ANY = ipaddress.IPv4Network("0.0.0.0/0")


def service_chain(key: ServiceKey) -> str:
    return f"LBCORE-S-{dnat.service_id(key)}"


def real_server_chain(key: ServiceKey, rs: RealServer) -> str:
    return f"LBCORE-R-{dnat.service_id(key)}-{dnat.real_server_id(key, rs)}"


def mark_chain(mark: int) -> str:
    return f"LBCORE-M-{mark:08X}"


def comments(text: str) -> list[bytes]:
    """A descriptor as comment matches: one per 255 bytes (iptables' limit for one comment)."""
    raw = text.encode()
    return [e.comment(raw[i:i + COMMENT_MAX].decode()) for i in range(0, len(raw), COMMENT_MAX)]


def service_descriptor(svc: VirtualService) -> str:
    return f"-A {svc.key.ipvsadm} -s {svc.scheduler}{service_suffix(svc)}"


def real_server_descriptor(key: ServiceKey, rs: RealServer) -> str:
    return f"-a {key.ipvsadm} -r {format_endpoint(rs.address, rs.port)} {real_server_options(rs)}"


def hook_entry(chain: str) -> bytes:
    return e.entry([e.comment(OWNER_COMMENT)], e.jump(chain))


# -- services --------------------------------------------------------------------------------------


def service_rank(svc: VirtualService) -> int:
    """Where a service's jump goes in LBCORE-SERVICES: IPVS looks a packet up by its firewall
    mark first, then by (protocol, VIP, port), then by the VIP's port-0 service (ip_vs_in)."""
    return 0 if svc.fwmark else (2 if svc.port == 0 else 1)


def service_jump(svc: VirtualService) -> bytes:
    """The dispatch entry: the packets of ``svc`` go to its chain."""
    matches = comments(service_descriptor(svc))
    target = e.jump(service_chain(svc.key))
    if svc.fwmark:
        return e.entry([e.mark(svc.fwmark), *matches], target)
    assert svc.protocol is not None and isinstance(svc.address, ipaddress.IPv4Address)
    ports = [_ports(svc.protocol, dport=(svc.port, svc.port))] if svc.port else []
    return e.entry([*ports, *matches], target, protocol=svc.protocol.number,
                   dst=ipaddress.IPv4Network(svc.address))


def _ports(protocol: Protocol, dport: tuple[int, int]) -> bytes:
    return e.tcp(dport=dport) if protocol is Protocol.TCP else e.udp(dport=dport)


def service_chains(svc: VirtualService) -> dict[str, list[bytes]]:
    """The chains of ``svc``: its own (persistence, then picks) and one per real server."""
    key = svc.key
    own: list[bytes] = []
    chains = {service_chain(key): own}
    persistence = svc.persistence
    mask = None
    if persistence is not None and isinstance(persistence.netmask, ipaddress.IPv4Address):
        mask = persistence.netmask
    for rs in svc.real_servers:
        chain = real_server_chain(key, rs)
        if persistence is not None:
            own.append(e.entry([e.recent(dnat.recent_name(key, rs), rcheck=True, seconds=persistence.timeout,
                                         reap=True, mask=mask)], e.jump(chain)))
    for pick in dnat.picks(svc):
        if pick.every:
            match = [e.statistic_nth(pick.every, pick.packet)]
        elif pick.threshold is not None:
            match = [e.statistic_random_threshold(pick.threshold)]
        else:
            match = []
        own.append(e.entry(match, e.jump(real_server_chain(key, pick.real_server))))
    for index, rs in enumerate(svc.real_servers):
        body = comments(f"{index} {real_server_descriptor(key, rs)}")
        if persistence is not None:
            body.insert(0, e.recent(dnat.recent_name(key, rs), set=True, mask=mask))
        port = rs.port or None
        # iptables-restore refuses a DNAT port without -p tcp/udp ("Need TCP, UDP, SCTP or DCCP
        # with port specification"): without it, iptables-save | iptables-restore of the table fails.
        # The service's jump matched the protocol already, so the match changes nothing else.
        protocol = svc.protocol.number if svc.protocol is not None else 0
        chains[real_server_chain(key, rs)] = [e.entry(body, e.dnat(rs.address, port),  # type: ignore[arg-type]
                                                      protocol=protocol)]
    return chains


# -- rules -----------------------------------------------------------------------------------------


def rule_dispatch(rule: Rule) -> tuple[str, str]:
    """(table, dispatch chain) of a rule."""
    if isinstance(rule, FirewallMark):
        return "mangle", MARKS
    if isinstance(rule, Redirect):
        return "nat", REDIRECTS
    assert isinstance(rule, AutoNat)
    return "nat", POSTROUTING


def rule_entries(rule: Rule) -> tuple[list[bytes], dict[str, list[bytes]]]:
    """A rule's entries in its dispatch chain, and the chains of its own (FirewallMark only)."""
    text = comments(rule.text())
    if isinstance(rule, FirewallMark):
        chain = mark_chain(rule.mark)
        return [e.entry(text, e.jump(chain))], {chain: list(_mark_body(rule))}
    if isinstance(rule, Redirect):
        ports = [_ports(rule.protocol, (rule.port, rule.port))] if rule.port else []
        dst = ipaddress.IPv4Network(rule.destination) if rule.destination else None
        return [e.entry([*ports, *text], e.redirect(rule.to_port), protocol=rule.protocol.number, dst=dst)], {}
    assert isinstance(rule, AutoNat)
    target = e.snat(rule.to_source) if rule.to_source else e.masquerade()
    return [e.entry(text, target, src=src, out_interface=rule.out_interface)
            for src in (rule.sources or (None,))], {}


def _mark_body(fm: FirewallMark) -> Iterator[bytes]:
    for excluded in fm.except_destinations:
        yield e.entry([], e.verdict("RETURN"), dst=excluded)
    target = e.set_mark(fm.mark)
    protocols: list[Protocol | None] = [*sorted(fm.protocols)] or [None]
    for proto in protocols:
        for dst in fm.destinations or (None,):
            for src in fm.sources or (None,):
                number = proto.number if proto is not None else 0
                if not fm.ports:
                    yield e.entry([], target, protocol=number, dst=dst, src=src)
                    continue
                for i in range(0, len(fm.ports), MULTIPORT_MAX):
                    yield e.entry([e.multiport(fm.ports[i:i + MULTIPORT_MAX])], target,
                                  protocol=number, dst=dst, src=src)
