"""What rtnetlink holds (pyroute2): policy routes, and real servers' VIPs on ``lo``.

A policy route is ``ip rule ... fwmark M table T`` and T's one route; a loopback VIP is an address
on ``lo`` (and the ARP sysctls it needs). lbcore's ip rules, routes and addresses carry routing
protocol 219 (RTPROT_LBCORE; addresses in IFA_PROTO); nothing without it is read or changed. A
route table is lbcore's only through its lbcore route: an operator's routes in the same table are
left alone, and an operator's default route there is reported with NotOwned, never replaced.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from lbcore.errors import BackendError, NotOwned, StateUnknown
from lbcore.rules import RTPROT_LBCORE, LoopbackVIP, PolicyRoute, Rule, RuleKey

#: ip rule priority of lbcore's rules: before main (32766), after local (0).
PRIORITY = 1000
RT_SCOPE_HOST = 254
#: The highest table a PolicyRoute may name (253..255 are default, main, local).
MAX_TABLE = 252
RTN_LOCAL = 2


#: The sysctls a loopback VIP needs, and the least value each must have (they are only raised).
ARP_SYSCTLS = {"/proc/sys/net/ipv4/conf/all/arp_ignore": 1, "/proc/sys/net/ipv4/conf/all/arp_announce": 2}


class _Kernel:
    """What rtnetlink holds now of what lbcore may have made: addresses and rules dumped once, routes per table."""

    def __init__(self, ipr: Any) -> None:
        self.lo = _lo(ipr)
        #: address on lo -> whether it is lbcore's (IFA_PROTO 219)
        self.addresses = {str(msg.get_attr("IFA_ADDRESS")): msg.get_attr("IFA_PROTO") == RTPROT_LBCORE
                          for msg in ipr.get_addr(family=socket.AF_INET, index=self.lo)}
        #: lbcore's rules as (mark, table), in the kernel's order: of two for one mark, the first is in
        #: effect. Only the rules lbcore writes (its priority, a mark, a table a PolicyRoute may name):
        #: another program's rule stamped 219 that lbcore could not have made is not taken as its.
        self.rules: list[tuple[int, int]] = []
        for msg in ipr.get_rules(family=socket.AF_INET):
            mark, table = int(msg.get_attr("FRA_FWMARK") or 0), int(msg.get_attr("FRA_TABLE") or msg["table"])
            if msg.get_attr("FRA_PROTOCOL") == RTPROT_LBCORE and msg.get_attr("FRA_PRIORITY") == PRIORITY \
                    and mark and 1 <= table <= MAX_TABLE:
                self.rules.append((mark, table))
        self._ipr = ipr
        self._defaults: dict[int, Any] = {}

    def default(self, table: int) -> Any:
        """The default route of ``table`` (whoever made it), or None; one dump of that table."""
        if table not in self._defaults:
            self._defaults[table] = next((msg for msg in self._ipr.get_routes(family=socket.AF_INET, table=table)
                                          if msg["dst_len"] == 0), None)
        return self._defaults[table]

    def forget(self, table: int) -> None:
        """Table ``table``'s routes changed: dump it again when next asked."""
        self._defaults.pop(table, None)

    def route(self, table: int) -> Any:
        """lbcore's default route of ``table``, or None."""
        msg = self.default(table)
        return msg if msg is not None and msg["proto"] == RTPROT_LBCORE else None

    def stamped(self) -> dict[int, Any]:
        """lbcore's default routes in every table, by table: a dump of all (an apply's sweep only)."""
        return {int(msg.get_attr("RTA_TABLE") or msg["table"]): msg
                for msg in self._ipr.get_routes(family=socket.AF_INET)
                if msg["dst_len"] == 0 and msg["proto"] == RTPROT_LBCORE}

    def tables(self, mark: int) -> list[int]:
        """The tables of lbcore's rules for ``mark``, the one in effect first."""
        return [table for m, table in self.rules if m == mark]


def _via(route: Any) -> ipaddress.IPv4Address | None:
    gateway = route.get_attr("RTA_GATEWAY") if route is not None else None
    return ipaddress.IPv4Address(gateway) if gateway else None


def read(ipr_factory: Callable[[], Any]) -> list[PolicyRoute | LoopbackVIP]:
    """lbcore's policy routes and loopback VIPs, as the kernel holds them.

    A policy route is read from lbcore's ip rule for its mark (the first, the one in effect, if
    an apply was cut short between adding one and deleting the other) and the default route that
    lbcore stamped in its table. Whatever a cut-short apply can leave reads as something the next
    plan carries through (see the "Crash safety" section of docs/design.md): a stamped route that
    no lbcore rule points to yet is not read (the rule decides; the route is replaced or swept by
    the next apply), and a rule whose route is gone reads without ``via``.
    """
    kernel = _Kernel(ipr_factory())
    found: list[PolicyRoute | LoopbackVIP] = [LoopbackVIP(address) for address, ours in kernel.addresses.items()
                                              if ours]
    for mark in dict.fromkeys(m for m, _ in kernel.rules):
        table = kernel.tables(mark)[0]
        found.append(PolicyRoute(mark, table, via=_via(kernel.route(table))))
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


def _rule_args(mark: int, table: int) -> dict[str, Any]:
    return {"fwmark": mark, "table": table, "priority": PRIORITY, "FRA_PROTOCOL": RTPROT_LBCORE}


def _address_args(address: str, lo: int) -> dict[str, Any]:
    return {"index": lo, "address": address, "prefixlen": 32, "IFA_PROTO": RTPROT_LBCORE}


def _as_policy_route(mark: int, table: int, route: Any) -> PolicyRoute:
    return PolicyRoute(mark, table, via=_via(route))


def _same_route(msg: Any, route: PolicyRoute) -> bool:
    if route.via is None:
        return bool(msg["type"] == RTN_LOCAL and _via(msg) is None)
    return _via(msg) == route.via


def _loopback_vip(ipr: Any, kernel: _Kernel, address: str, new: Rule | None, steps: Steps) -> None:
    ours = kernel.addresses.get(address)
    lo = kernel.lo
    if new is None:
        if ours:
            ipr.addr("del", **_address_args(address, lo))
            steps.append((f"delete loopback-vip {address}", partial(ipr.addr, "add", **_address_args(address, lo))))
        return
    if ours is False:
        raise NotOwned(f"the address {address}/32 on lo is not lbcore's (it carries no IFA_PROTO "
                       f"{RTPROT_LBCORE}): lbcore leaves it alone, so it cannot hold loopback-vip {address}")
    if ours is None:
        _raise_arp_sysctls()  # the sysctls first: the VIP must never answer ARP
        ipr.addr("add", **_address_args(address, lo))
        steps.append((f"add loopback-vip {address}", partial(ipr.addr, "del", **_address_args(address, lo))))


def _policy_route(ipr: Any, kernel: _Kernel, mark: int, new: PolicyRoute | None, steps: Steps) -> None:
    """Make mark ``mark``'s policy route ``new`` (None: absent), keeping ``kernel`` up to date."""
    lo = kernel.lo
    old_tables = kernel.tables(mark)
    if new is not None:
        held = kernel.default(new.table)
        if held is not None and held["proto"] != RTPROT_LBCORE:
            raise NotOwned(f"table {new.table} has a default route that is not lbcore's (protocol "
                           f"{held['proto']}, not {RTPROT_LBCORE}): lbcore leaves it alone, so it cannot "
                           f"hold {new.text()}")
        if held is not None and not _same_route(held, new) and new.via is not None:
            # A gateway is resolved in the route's own table first, where the route it replaces
            # would still be found (a local default would send it out through lo): that route
            # goes first. Cut short here, the rule reads without via, unlike the route wanted.
            was = _as_policy_route(mark, new.table, held)
            ipr.route("del", **_route_args(was, lo))
            kernel.forget(new.table)
            steps.append((f"delete the route of {was.text()}", partial(ipr.route, "add", **_route_args(was, lo))))
            held = None
        if held is None or not _same_route(held, new):
            # replace, not add: a route stamped by an apply cut short before its rule is taken over;
            # and a local route replaces a gateway's in one step (cut short, nothing reads as local).
            ipr.route("replace", **_route_args(new, lo))
            kernel.forget(new.table)
            if held is None:
                steps.append((f"add the route of {new.text()}", partial(ipr.route, "del", **_route_args(new, lo))))
            else:
                was = _as_policy_route(mark, new.table, held)
                steps.append((f"replace the route of {was.text()}",
                              partial(ipr.route, "replace", **_route_args(was, lo))))
        if new.table not in old_tables:  # the route first: a rule never points at nothing
            ipr.rule("add", **_rule_args(mark, new.table))
            kernel.rules.append((mark, new.table))
            steps.append((f"add the rule of {new.text()}",
                          partial(ipr.rule, "del", **_rule_args(mark, new.table))))
    for table in old_tables:
        if new is not None and table == new.table:
            continue
        # The route first, then the rule: cut short here, the rule reads as a policy route that
        # differs from the one wanted, so the next plan finishes the job.
        # Another mark's rule may point to the table now (tables swapped between marks): its route stays.
        route = kernel.route(table)
        if route is not None and all(t != table for m, t in kernel.rules if m != mark):
            was = _as_policy_route(mark, table, route)
            ipr.route("del", **_route_args(was, lo))
            kernel.forget(table)
            steps.append((f"delete the route of {was.text()}", partial(ipr.route, "add", **_route_args(was, lo))))
        ipr.rule("del", **_rule_args(mark, table))
        kernel.rules.remove((mark, table))
        steps.append((f"delete the rule of policy-route {mark} table={table}",
                      partial(ipr.rule, "add", **_rule_args(mark, table))))


def _sweep(ipr: Any, kernel: _Kernel, steps: Steps) -> None:
    """Delete the routes lbcore stamped that none of its rules points to: left by a cut-short add."""
    pointed = {table for _, table in kernel.rules}
    for table, msg in kernel.stamped().items():
        if table not in pointed:
            was = _as_policy_route(1, table, msg)
            ipr.route("del", **_route_args(was, kernel.lo))
            steps.append((f"delete the route left in table {table}",
                          partial(ipr.route, "add", **_route_args(was, kernel.lo))))


def apply(ipr: Any, changes: Mapping[RuleKey, Rule | None]) -> None:
    """Make each changed policy route or loopback VIP what ``changes`` says (None: absent), or none.

    Each step is idempotent over what an apply cut short may have left (see :func:`read`), and
    ordered so that every prefix of it reads back as the old or a state the next plan completes.

    Raises:
        NotOwned: the address, or the table's default route, exists and is not lbcore's.
        BackendError: rtnetlink refused; the steps already taken were taken back.
        StateUnknown: and taking one back failed too; ``applied`` lists the steps in effect.
    """
    kernel = _Kernel(ipr)
    steps: Steps = []
    try:
        for key, new in sorted(changes.items(), key=lambda change: change[0]):  # the same steps in every process
            if key[0] == "loopback-vip":
                _loopback_vip(ipr, kernel, key[1], new, steps)
            else:
                assert new is None or isinstance(new, PolicyRoute)
                _policy_route(ipr, kernel, key[1], new, steps)
        _sweep(ipr, kernel, steps)
    except Exception as exc:
        while steps:
            try:
                steps[-1][1]()
            except Exception as undo_exc:
                raise StateUnknown("iptables", f"rtnetlink refused a change ({exc}) and taking back "
                                   f"{steps[-1][0]!r} failed ({undo_exc})", [what for what, _ in steps]) from exc
            steps.pop()
        if isinstance(exc, NotOwned):
            raise
        raise BackendError("iptables", f"rtnetlink refused a change: {exc}",
                           errno=getattr(exc, "code", None)) from exc
