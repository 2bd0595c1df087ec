"""The DNAT balancer's data plane: lbcore.dnat's nat rules, evaluated as the kernel evaluates them.

What a new connection meets, in the order the iptables backend writes it (lbcore_iptables._layout):
the services' jumps (fwmark first, then by port, then port 0; the first that matches and picks a
real server wins, a chain that picks none returns to the next), in each service the persistence
checks, then the picks. It mirrors:

- xt_statistic.c: an nth rule counts the packets that reach it, from ``every - 1 - packet``, and
  matches when the count wraps to 0; random mode matches when ``u32 & 0x7FFFFFFF`` is below the
  stored threshold. Every commit of the nat table replaces every rule, so every count restarts;
- xt_recent.c: one list per real server, at most 100 clients (ip_list_tot), least recently set
  first out; ``--rcheck --seconds T`` matches a client set within T seconds; ``--reap`` drops the
  least recently set client of the list looked up when it has expired; ``--set`` stamps and moves to the back. Lists
  live on across commits while a rule names them.

Only a connection's first packet traverses nat (conntrack keeps the rest on the same real server),
so this is asked once per connection.

.. versionadded:: 0.2
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict
from collections.abc import Callable

from lbcore import dnat
from lbcore.enums import Protocol
from lbcore.model import IPAddress, RealServer, ServiceKey, VirtualService
from lbcore.ops import AddRule, DeleteRule, Prepared
from lbcore.sim._dataplane import Reached
from lbcore.sim.director import Conn
from lbcore.table import Table

# A recent list's identity: its service and real server (the backend's list name encodes both).
RecentList = tuple[ServiceKey, tuple[IPAddress, int]]
#: Clients one recent list holds (xt_recent's ip_list_tot).
RECENT_LIST_SIZE = 100


class DNATDataPlane:
    """The nat rules of the DNAT balancer and their state (counters, recent lists, random source).

    One of the simulator's data planes: conntrack's entries are not modelled, so it
    counts no connections and a disconnect changes nothing.
    """

    def __init__(self, now: Callable[[], float], seed: int = 0) -> None:
        self.now = now
        self.random = random.Random(seed)
        self.services: list[VirtualService] = []
        self.counters: dict[tuple[int, int], int] = {}  # (service index, pick index) -> nth count
        # One xt_recent list per (service, real server): the iptables backend names it after both.
        self.recent: dict[RecentList, OrderedDict[int, float]] = {}

    def commit(self, prepared: Prepared) -> None:
        """Carry out checked ops as the iptables backend does: it commits the nat table for any
        change but to marks and policy routes (mangle, routing), and only then."""
        if any(not isinstance(op, (AddRule, DeleteRule)) or dnat.RULE_TABLES.get(op.rule.key[0]) == "nat"
               for op in prepared.ops):
            self.load(prepared.after)

    def save(self, prepared: Prepared | None = None) -> object:
        """The rules, counts, recent lists and random source, copied (whatever ``prepared`` holds)."""
        return (list(self.services), dict(self.counters), {k: OrderedDict(v) for k, v in self.recent.items()},
                self.random.getstate())

    def restore(self, saved: object) -> None:
        """Put back what :meth:`save` copied."""
        assert isinstance(saved, tuple)
        self.services, self.counters, self.recent, state = saved
        self.random.setstate(state)

    def run_timers(self, now: float) -> None:
        """Nothing: xt_recent judges a stamp's age when it is looked up."""

    def connect(self, protocol: Protocol, client: IPAddress, client_port: int, vip: IPAddress, vport: int,
                mark: int, payload: int) -> Reached | None:
        """The first packet's way through nat: the real server it is DNATed to, or None."""
        rs = self.pick(protocol, client, vip, vport, mark)
        return None if rs is None else Reached(rs.address, rs.port or vport)

    def which(self, protocol: Protocol, client: IPAddress, client_port: int, vip: IPAddress, vport: int,
              mark: int) -> Reached | None:
        """What :meth:`connect` would reach now, changing nothing."""
        rs = self.predict(protocol, client, vip, vport, mark)
        return None if rs is None else Reached(rs.address, rs.port or vport)

    def disconnect(self, protocol: Protocol, client: IPAddress, client_port: int, vip: IPAddress, vport: int,
                   entry: Conn | None) -> None:
        """Nothing: conntrack's entry just ends."""

    def connection_counts(self, key: ServiceKey) -> dict[tuple[IPAddress, int], int] | None:
        """None: like the iptables backend, it counts no connections (conntrack is not read)."""
        return None

    def load(self, table: Table) -> None:
        """Replace the rules, as a commit of the nat table does: counts restart, lists stay."""
        services = sorted(table.services.values(), key=dnat.service_rank)
        self.services = services
        self.counters = {}
        for i, svc in enumerate(services):
            for j, pick in enumerate(dnat.picks(svc)):
                if pick.every:
                    self.counters[i, j] = pick.every - 1 - pick.packet
        named = {(s.key, rs.key) for s in services if s.persistence for rs in s.real_servers}
        self.recent = {name: self.recent.get(name, OrderedDict()) for name in named}

    def _matches(self, svc: VirtualService, protocol: Protocol, vip: IPAddress, vport: int, mark: int) -> bool:
        if svc.fwmark:
            return mark == svc.fwmark
        return svc.protocol is protocol and svc.address == vip and svc.port in (vport, 0)

    def pick(self, protocol: Protocol, client: IPAddress, vip: IPAddress, vport: int,
             mark: int = 0) -> RealServer | None:
        """The real server a new connection is DNATed to (changing counters and lists), or None."""
        for i, svc in enumerate(self.services):
            if self._matches(svc, protocol, vip, vport, mark):
                chosen = self._service(i, svc, client)
                if chosen is not None:
                    return chosen
        return None

    def predict(self, protocol: Protocol, client: IPAddress, vip: IPAddress, vport: int,
                mark: int = 0) -> RealServer | None:
        """What :meth:`pick` would answer now, changing nothing."""
        saved = self.save()
        try:
            return self.pick(protocol, client, vip, vport, mark)
        finally:
            self.restore(saved)

    def _service(self, index: int, svc: VirtualService, client: IPAddress) -> RealServer | None:
        now = self.now()
        source = _masked(client, svc)
        if svc.persistence is not None:
            timeout = svc.persistence.timeout
            for rs in svc.real_servers:
                clients = self.recent[svc.key, rs.key]
                stamp = clients.get(source)
                if stamp is None:
                    continue
                matched = now - stamp <= timeout
                oldest = next(iter(clients))
                # --reap: recent_entry_reap() drops the least recently set client if expired,
                # even the one just looked up (only --update spares that one).
                if now - clients[oldest] > timeout:
                    del clients[oldest]
                if matched:
                    return self._jump(svc, rs, source, now)
        for j, pick in enumerate(dnat.picks(svc)):
            if pick.every:
                count = self.counters[index, j]
                count = 0 if count == pick.every - 1 else count + 1
                self.counters[index, j] = count
                if count != 0:
                    continue
            elif pick.threshold is not None and (self.random.getrandbits(32) & 0x7FFFFFFF) >= pick.threshold:
                continue
            return self._jump(svc, pick.real_server, source, now)
        return None

    def _jump(self, svc: VirtualService, rs: RealServer, source: int, now: float) -> RealServer:
        if svc.persistence is not None:  # the real server's chain: --set, then DNAT
            clients = self.recent[svc.key, rs.key]
            if source not in clients and len(clients) >= RECENT_LIST_SIZE:
                clients.popitem(last=False)
            clients.pop(source, None)
            clients[source] = now
        return rs


def _masked(client: IPAddress, svc: VirtualService) -> int:
    netmask = svc.persistence.netmask if svc.persistence is not None else None
    mask = int(netmask) if isinstance(netmask, ipaddress.IPv4Address) else 0xFFFFFFFF
    return int(client) & mask
