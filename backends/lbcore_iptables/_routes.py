"""Policy routes over rtnetlink (pyroute2): ``ip rule ... fwmark M table T`` and T's one route.

lbcore's ip rules and routes carry routing protocol 219 (RTPROT_LBCORE); nothing without it is
read or changed. A route table is lbcore's only through its lbcore route: an operator's routes in
the same table are left alone.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping
from typing import Any

from lbcore.errors import BackendError
from lbcore.rules import RTPROT_LBCORE, PolicyRoute, Rule, RuleKey

#: ip rule priority of lbcore's rules: before main (32766), after local (0).
PRIORITY = 1000
RTN_UNICAST, RTN_LOCAL = 1, 2
RT_SCOPE_UNIVERSE, RT_SCOPE_HOST = 0, 254


def read(ipr_factory: Callable[[], Any]) -> list[PolicyRoute]:
    """lbcore's policy routes, as the kernel holds them."""
    ipr = ipr_factory()
    found = []
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


def _add(ipr: Any, route: PolicyRoute) -> None:
    if route.via is None:  # ip route add local 0.0.0.0/0 dev lo table T
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.route("add", dst="0.0.0.0", dst_len=0, type="local", scope=RT_SCOPE_HOST, oif=lo,
                  table=route.table, proto=RTPROT_LBCORE)
    else:
        ipr.route("add", dst="0.0.0.0", dst_len=0, gateway=str(route.via), table=route.table,
                  proto=RTPROT_LBCORE)
    ipr.rule("add", fwmark=route.mark, table=route.table, priority=PRIORITY, FRA_PROTOCOL=RTPROT_LBCORE)


def _delete(ipr: Any, route: PolicyRoute) -> None:
    ipr.rule("del", fwmark=route.mark, table=route.table, priority=PRIORITY, FRA_PROTOCOL=RTPROT_LBCORE)
    for msg in ipr.get_routes(table=route.table, family=socket.AF_INET):
        if msg["proto"] == RTPROT_LBCORE and msg["dst_len"] == 0:
            ipr.route("del", dst="0.0.0.0", dst_len=0, table=route.table, type=msg["type"],
                      scope=msg["scope"], proto=RTPROT_LBCORE)


def apply(ipr: Any, changes: Mapping[RuleKey, Rule | None]) -> None:
    """Make each changed policy route what ``changes`` says (None: absent), or none of them.

    Raises:
        BackendError: rtnetlink refused; the changes already made were undone.
    """
    before = {r.key: r for r in read(lambda: ipr)}
    done: list[tuple[PolicyRoute | None, PolicyRoute | None]] = []
    try:
        for key, new in changes.items():
            old = before.get(key)
            assert new is None or isinstance(new, PolicyRoute)
            if old is not None:
                _delete(ipr, old)
            done.append((old, None))
            if new is not None:
                _add(ipr, new)
                done[-1] = (old, new)
    except Exception as exc:
        for old, new in reversed(done):
            if new is not None:
                _delete(ipr, new)
            if old is not None:
                _add(ipr, old)
        raise BackendError("iptables", f"policy routing refused a change: {exc}",
                           errno=getattr(exc, "code", None)) from exc
