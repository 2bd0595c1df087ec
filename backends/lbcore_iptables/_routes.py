"""What rtnetlink holds (pyroute2): policy routes, and real servers' VIPs on ``lo``.

A policy route is ``ip rule ... fwmark M table T`` and T's one route; a loopback VIP is an address
on ``lo`` (and the ARP sysctls it needs). lbcore's ip rules, routes and addresses carry routing
protocol 219 (RTPROT_LBCORE); nothing without it is read or changed. A route table is lbcore's only
through its lbcore route: an operator's routes in the same table are left alone.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping
from typing import Any

from lbcore.errors import BackendError, StateUnknown
from lbcore.rules import RTPROT_LBCORE, LoopbackVIP, PolicyRoute, Rule, RuleKey

#: ip rule priority of lbcore's rules: before main (32766), after local (0).
PRIORITY = 1000
RT_SCOPE_HOST = 254


#: The sysctls a loopback VIP needs, and the least value each must have (they are only raised).
ARP_SYSCTLS = {"/proc/sys/net/ipv4/conf/all/arp_ignore": 1, "/proc/sys/net/ipv4/conf/all/arp_announce": 2}


def read(ipr_factory: Callable[[], Any]) -> list[PolicyRoute | LoopbackVIP]:
    """lbcore's policy routes and loopback VIPs, as the kernel holds them."""
    ipr = ipr_factory()
    found: list[PolicyRoute | LoopbackVIP] = [
        LoopbackVIP(msg.get_attr("IFA_ADDRESS")) for msg in ipr.get_addr(family=socket.AF_INET, index=_lo(ipr))
        if msg.get_attr("IFA_PROTO") == RTPROT_LBCORE]
    for msg in ipr.get_rules(family=socket.AF_INET):
        if msg.get_attr("FRA_PROTOCOL") != RTPROT_LBCORE:
            continue
        table = msg.get_attr("FRA_TABLE") or msg["table"]
        via = None
        for route in ipr.get_routes(table=table, family=socket.AF_INET):
            if route["proto"] == RTPROT_LBCORE and route["dst_len"] == 0:
                gateway = route.get_attr("RTA_GATEWAY")
                via = ipaddress.IPv4Address(gateway) if gateway else None
        found.append(PolicyRoute(msg.get_attr("FRA_FWMARK"), table, via=via))
    return found


def _lo(ipr: Any) -> int:
    return int(ipr.link_lookup(ifname="lo")[0])


def _raise_arp_sysctls() -> None:
    for path, least in ARP_SYSCTLS.items():
        with open(path, "r+", encoding="ascii") as f:
            if int(f.read()) < least:
                f.seek(0)
                f.write(str(least))


Steps = list[tuple[str, Callable[[], object]]]  # what was done, and how to take it back


def _route_args(route: PolicyRoute, lo: int) -> dict[str, Any]:
    if route.via is None:  # ip route add local 0.0.0.0/0 dev lo table T
        return {"dst": "0.0.0.0", "dst_len": 0, "type": "local", "scope": RT_SCOPE_HOST, "oif": lo,
                "table": route.table, "proto": RTPROT_LBCORE}
    return {"dst": "0.0.0.0", "dst_len": 0, "gateway": str(route.via), "table": route.table,
            "proto": RTPROT_LBCORE}


def _rule_args(route: PolicyRoute) -> dict[str, Any]:
    return {"fwmark": route.mark, "table": route.table, "priority": PRIORITY, "FRA_PROTOCOL": RTPROT_LBCORE}


def _address_args(vip: LoopbackVIP, lo: int) -> dict[str, Any]:
    return {"index": lo, "address": str(vip.address), "prefixlen": 32, "IFA_PROTO": RTPROT_LBCORE}


def _add(ipr: Any, route: PolicyRoute | LoopbackVIP, steps: Steps) -> None:
    lo = _lo(ipr)
    if isinstance(route, LoopbackVIP):  # the sysctls first: the VIP must never answer ARP
        _raise_arp_sysctls()
        ipr.addr("add", **_address_args(route, lo))
        steps.append((f"add {route.text()}", lambda: ipr.addr("del", **_address_args(route, lo))))
        return
    ipr.route("add", **_route_args(route, lo))
    steps.append((f"add the route of {route.text()}", lambda: ipr.route("del", **_route_args(route, lo))))
    ipr.rule("add", **_rule_args(route))
    steps.append((f"add the rule of {route.text()}", lambda: ipr.rule("del", **_rule_args(route))))


def _delete(ipr: Any, route: PolicyRoute | LoopbackVIP, steps: Steps) -> None:
    lo = _lo(ipr)
    if isinstance(route, LoopbackVIP):
        ipr.addr("del", **_address_args(route, lo))
        steps.append((f"delete {route.text()}", lambda: ipr.addr("add", **_address_args(route, lo))))
        return
    ipr.rule("del", **_rule_args(route))
    steps.append((f"delete the rule of {route.text()}", lambda: ipr.rule("add", **_rule_args(route))))
    ipr.route("del", **_route_args(route, lo))
    steps.append((f"delete the route of {route.text()}", lambda: ipr.route("add", **_route_args(route, lo))))


def apply(ipr: Any, changes: Mapping[RuleKey, Rule | None]) -> None:
    """Make each changed policy route or loopback VIP what ``changes`` says (None: absent), or none.

    Raises:
        BackendError: rtnetlink refused; the steps already taken were taken back.
        StateUnknown: and taking one back failed too; ``applied`` lists the steps in effect.
    """
    before = {r.key: r for r in read(lambda: ipr)}
    steps: Steps = []
    try:
        # Every delete before every add, in key order: a routing table that moves to another
        # mark, or two marks that swap tables, would otherwise meet its old route (EEXIST), or
        # not, depending on the order of the mapping (a set's, by PYTHONHASHSEED).
        keys = sorted(changes, key=lambda k: tuple(map(str, k)))
        for key in keys:
            old = before.get(key)
            if old is not None:
                _delete(ipr, old, steps)
        for key in keys:
            new = changes[key]
            assert new is None or isinstance(new, (PolicyRoute, LoopbackVIP))
            if new is not None:
                _add(ipr, new, steps)
    except Exception as exc:
        while steps:
            try:
                steps[-1][1]()
            except Exception as undo_exc:
                raise StateUnknown("iptables", f"rtnetlink refused a change ({exc}) and taking back "
                                   f"{steps[-1][0]!r} failed ({undo_exc})", [what for what, _ in steps]) from exc
            steps.pop()
        raise BackendError("iptables", f"rtnetlink refused a change: {exc}",
                           errno=getattr(exc, "code", None)) from exc
