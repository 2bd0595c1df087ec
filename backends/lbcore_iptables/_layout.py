"""Where each object lbcore owns lives in netfilter: chains, jumps and descriptor comments.

Every rule lbcore writes sits in a chain named ``LBCORE-*``. Built-in chains reach them through
one jump each, which carries the comment ``lbcore`` so that it is found and never confused with an
operator's rule. The name proves nothing: a chain is lbcore's only if its first rule is the *owner
mark*, a rule with no target and the comment ``lbcore:owner`` (:data:`OWNER_MARK`), written in the
same commit that creates the chain. A chain named ``LBCORE-*`` without it is another program's:
never read, never changed (an apply that needs its name raises NotOwned). Each object carries its
*descriptor* in comment matches, so that reading the state decodes comments of lbcore's own chains
only, never lists an operator's chain, nor parses a match:

- a service's chain opens with *header* rules (no target: they only count) whose comments hold its
  ipvsadm lines (``-A -t 192.0.2.1:80 -s rr``, then ``-a ... -r ... -m -w 1`` per real server, in
  order); so one service is read, or found absent, by its chain's name alone;
- a rule of lbcore.rules is a jump (or rules) in a dispatch chain, carrying its ``text()``.

::

    nat     PREROUTING,  -> LBCORE-SERVICES -> LBCORE-SVC-MARK  jumps by firewall mark,
            OUTPUT                          -> LBCORE-SVC-PORT  by protocol, VIP and port,
                                            -> LBCORE-SVC-ANY   by protocol and VIP (port 0)
                                                 -> LBCORE-S-<svc>  header, persistence, picks
                                                    -> LBCORE-R-<svc>-<rs>  recent --set, DNAT
            PREROUTING   -> LBCORE-REDIRECT      the Redirects, one rule each
            POSTROUTING  -> LBCORE-POSTROUTING   the AutoNats
    mangle  PREROUTING   -> LBCORE-MARK          one jump per FirewallMark, in mark order
                                                 -> LBCORE-M-<mark>  RETURN exceptions, then MARK

IPVS looks a packet up by firewall mark first, then by port, then by a port-0 service (ip_vs_in),
hence the three service chains in that order; within one there is no overlap, so a new service's
jump is appended without a search.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Iterator

from lbcore import dnat
from lbcore.enums import Protocol
from lbcore.formats.ipvsadm import real_server_options, service_suffix
from lbcore.model import RealServer, ServiceKey, VirtualService, format_endpoint
from lbcore.rules import AutoNat, FirewallMark, Redirect, Rule
from lbcore_iptables import _entries as e

OWNER_COMMENT = "lbcore"
#: The comment of the first rule of every chain lbcore made: what makes an ``LBCORE-*`` chain its.
OWNER_MARK = "lbcore:owner"
COMMENT_MAX = 255
MULTIPORT_MAX = 15

SERVICES = "LBCORE-SERVICES"
REDIRECTS = "LBCORE-REDIRECT"
POSTROUTING = "LBCORE-POSTROUTING"
MARKS = "LBCORE-MARK"

#: The service chains by rank (lbcore.dnat.service_rank), jumped to from SERVICES in this order.
SERVICE_RANKS = ("LBCORE-SVC-MARK", "LBCORE-SVC-PORT", "LBCORE-SVC-ANY")
#: Between the ipvsadm lines in a header: not a newline, which iptables-save would print as is,
#: breaking its own output into lines that iptables-restore cannot read.
LINE_SEPARATOR = " | "
#: Comment matches per header rule: an entry must stay under 64 KiB (next_offset is 16 bits).
HEADER_COMMENTS = 128

#: (table, built-in chain, lbcore's chain): the jumps lbcore adds to built-in chains.
HOOKS = (
    ("nat", "PREROUTING", SERVICES),
    ("nat", "OUTPUT", SERVICES),
    ("nat", "PREROUTING", REDIRECTS),
    ("nat", "POSTROUTING", POSTROUTING),
    ("mangle", "PREROUTING", MARKS),
)


def _digest(text: str, digits: int = 8) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:digits].upper()


@functools.lru_cache(maxsize=65536)  # asked for every chain and list of a service, at each sync
def service_id(key: ServiceKey) -> str:
    """A short stable name for a service: 10 hex digits of its ipvsadm identity (as many as a
    real server's chain name, ``LBCORE-R-<service>-<real server>``, leaves in 28 characters)."""
    return _digest(key.ipvsadm, 10)


@functools.lru_cache(maxsize=65536)
def real_server_id(key: ServiceKey, rs: RealServer) -> str:
    """A short stable name for a real server of a service."""
    return _digest(f"{key.ipvsadm} {rs.endpoint}")


def recent_name(key: ServiceKey, rs: RealServer) -> str:
    """The xt_recent list of clients persistent to ``rs`` (kept across commits, by name)."""
    return f"LBCORE-{service_id(key)}-{real_server_id(key, rs)}"


def service_chain(key: ServiceKey) -> str:
    return f"LBCORE-S-{service_id(key)}"


def real_server_chain(key: ServiceKey, rs: RealServer) -> str:
    return f"LBCORE-R-{service_id(key)}-{real_server_id(key, rs)}"


def mark_chain(mark: int) -> str:
    return f"LBCORE-M-{mark:08X}"


def comments(text: str) -> list[bytes]:
    """A descriptor as comment matches: one per 255 bytes (iptables' limit for one comment)."""
    raw = text.encode()
    return [e.comment(raw[i:i + COMMENT_MAX].decode()) for i in range(0, len(raw), COMMENT_MAX)]


def service_descriptor(svc: VirtualService) -> str:
    suffix = service_suffix(svc)
    netmask = svc.persistence.netmask if svc.persistence is not None else None
    if netmask is not None and " -M " not in suffix:
        # ipvsadm-save leaves a /32 (or /128) netmask out, as the kernel's default; the descriptor
        # keeps what was asked for, so that it reads back equal and a re-apply changes nothing.
        suffix += f" -M {netmask}"
    return f"-A {svc.key.ipvsadm} -s {svc.scheduler}{suffix}"


def real_server_descriptor(key: ServiceKey, rs: RealServer) -> str:
    return f"-a {key.ipvsadm} -r {format_endpoint(rs.address, rs.port)} {real_server_options(rs)}"


def hook_entry(chain: str) -> bytes:
    return e.entry([e.comment(OWNER_COMMENT)], e.jump(chain))


def owner_entry() -> bytes:
    """The first rule of each of lbcore's chains: no target (it only counts), the owner mark."""
    return e.entry([e.comment(OWNER_MARK)], e.fallthrough())


# -- services --------------------------------------------------------------------------------------


def rank_chain(svc: VirtualService) -> str:
    """The chain that holds the jump to ``svc``: by mark, by port, or by port 0 (SERVICE_RANKS)."""
    return SERVICE_RANKS[dnat.service_rank(svc)]


def service_jump(svc: VirtualService) -> bytes:
    """The entry in its rank chain that sends the packets of ``svc`` to its chain."""
    target = e.jump(service_chain(svc.key))
    if svc.fwmark:
        return e.entry([e.mark(svc.fwmark)], target)
    assert svc.protocol is not None and isinstance(svc.address, ipaddress.IPv4Address)
    ports = [_ports(svc.protocol, dport=(svc.port, svc.port))] if svc.port else []
    return e.entry(ports, target, protocol=svc.protocol.number, dst=ipaddress.IPv4Network(svc.address))


def descriptor_lines(svc: VirtualService) -> list[str]:
    """The service's ipvsadm lines: ``-A ...``, then ``-a ...`` per real server, in order."""
    return [service_descriptor(svc), *(real_server_descriptor(svc.key, rs) for rs in svc.real_servers)]


def header_entries(svc: VirtualService) -> list[bytes]:
    """Rules with no target that carry the service's descriptor lines in their comments."""
    matches = comments(LINE_SEPARATOR.join(descriptor_lines(svc)))
    return [e.entry(matches[i:i + HEADER_COMMENTS], e.fallthrough())
            for i in range(0, len(matches), HEADER_COMMENTS)]


def _ports(protocol: Protocol, dport: tuple[int, int]) -> bytes:
    return e.tcp(dport=dport) if protocol is Protocol.TCP else e.udp(dport=dport)


def service_chains(svc: VirtualService) -> dict[str, list[bytes]]:
    """The chains of ``svc``: its own (header, persistence, picks) and one per real server."""
    key = svc.key
    own: list[bytes] = header_entries(svc)
    chains = {service_chain(key): own}
    persistence = svc.persistence
    mask = None
    if persistence is not None and isinstance(persistence.netmask, ipaddress.IPv4Address):
        mask = persistence.netmask
    for rs in svc.real_servers:
        chain = real_server_chain(key, rs)
        if persistence is not None:
            own.append(e.entry([e.recent(recent_name(key, rs), rcheck=True, seconds=persistence.timeout,
                                         reap=True, mask=mask)], e.jump(chain)))
    for pick in dnat.picks(svc):
        if pick.every:
            match = [e.statistic_nth(pick.every, pick.packet)]
        elif pick.threshold is not None:
            match = [e.statistic_random_threshold(pick.threshold)]
        else:
            match = []
        own.append(e.entry(match, e.jump(real_server_chain(key, pick.real_server))))
    for rs in svc.real_servers:
        body = [e.recent(recent_name(key, rs), set=True, mask=mask)] if persistence is not None else []
        target = e.dnat(rs.address, rs.port or None)  # type: ignore[arg-type]
        # iptables-restore refuses a DNAT port without -p ("Need TCP, UDP, SCTP or DCCP with port
        # specification"), so iptables-save | iptables-restore of the table would fail. The jump
        # matched the protocol already; a fwmark service's new port needs one rule per protocol.
        if svc.protocol is not None:
            protocols = [svc.protocol.number]
        else:
            protocols = [Protocol.TCP.number, Protocol.UDP.number] if rs.port else [0]
        chains[real_server_chain(key, rs)] = [e.entry(body, target, protocol=p) for p in protocols]
    return chains


# -- rules -----------------------------------------------------------------------------------------


#: (table, dispatch chain) of each kind of rule netfilter holds.
RULE_CHAINS = {kind: (table, {"mark": MARKS, "redirect": REDIRECTS, "auto-nat": POSTROUTING}[kind])
               for kind, table in dnat.RULE_TABLES.items()}


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
