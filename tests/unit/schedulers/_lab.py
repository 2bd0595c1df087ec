"""A simulated director with one virtual service, shared by the scheduler tests (``from _lab import ...``).

Real servers are named by letter: A is 198.51.100.1, B .2, C .3, D .4. Added in the order A, B, C
they form the kernel's list [C, B, A] (a new dest goes to the head), so "first in list" means
"added last". Clients come from 203.0.113.0/24 (RFC 5737), except where a worked example of
ipvs-notes.md fixes other addresses.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs

from lbcore import Balancer, RealServer, VirtualService
from lbcore.sim import Connection, SimBackend
from lbcore.sim.state import Dest, SimService

VIP = "192.0.2.1"
CLIENT = "203.0.113.1"
LETTERS = {f"198.51.100.{i}": name for i, name in enumerate("ABCDEFGH", start=1)}
ADDRESSES = {name: address for address, name in LETTERS.items()}


def address(name: str) -> str:
    """The address of real server ``name`` (A, B, ...); any other name is an address already."""
    return ADDRESSES.get(name, name)


def rs(name: str, weight: int = 1, **fields: Any) -> RealServer:
    """Real server ``name`` (A, B, ... or an address) on port 80; DR unless ``forward`` says otherwise."""
    return RealServer(address(name), fields.pop("port", 80), weight=weight, **fields)


def letter(address: object) -> str:
    """The letter of a real server address, or the address itself if it has none."""
    return LETTERS.get(str(address), str(address))


class Lab:
    """One SimBackend holding one virtual service, with shortcuts to what the kernel holds."""

    def __init__(self, scheduler: str, *real_servers: RealServer, protocol: str = "tcp", seed: int = 0,
                 **service: Any) -> None:
        self.sim = SimBackend(seed=seed, kernel="6.2" if scheduler == "twos" else "6.1")  # twos: 6.2+
        self.lb = Balancer(self.sim)
        if "fwmark" in service:
            self.service = VirtualService(scheduler=scheduler, real_servers=list(real_servers), **service)
        else:
            self.service = VirtualService(protocol=protocol, address=service.pop("address", VIP),
                                          port=service.pop("port", 80),
                                          scheduler=scheduler, real_servers=list(real_servers), **service)
        self.protocol = protocol
        self.lb.add_service(self.service)

    # -- what the kernel holds ------------------------------------------------------------------

    @property
    def svc(self) -> SimService:
        return self.sim.director.services[self.service.key]

    @property
    def scheduler(self) -> Any:
        return self.svc.scheduler

    def order(self) -> list[str]:
        """The dest list, by letter, in the kernel's order."""
        return [letter(d.address) for d in self.svc.dests]

    def dest(self, name: str) -> Dest:
        wanted = ipaddress.ip_address(address(name))
        found = [d for d in self.svc.dests if d.address == wanted]
        assert len(found) == 1, f"{name} is not in the dest list once"
        return found[0]

    def real_server(self, name: str) -> RealServer:
        current = self.lb.read().get(self.service.key)
        assert current is not None
        found = [r for r in current.real_servers if r.address == ipaddress.ip_address(address(name))]
        assert len(found) == 1
        return found[0]

    # -- control -------------------------------------------------------------------------------

    def add(self, real_server: RealServer) -> None:
        self.lb.add_real_server(self.service, real_server)

    def edit(self, name: str, **changes: Any) -> None:
        self.lb.edit_real_server(self.service, attrs.evolve(self.real_server(name), **changes))

    def delete(self, name: str) -> None:
        real_server = self.real_server(name)
        self.lb.delete_real_server(self.service, real_server.address, real_server.port)

    # -- traffic -------------------------------------------------------------------------------

    def open(self, client: str = CLIENT, *, vip: str = VIP, vport: int = 80, **options: Any) -> Connection | None:
        """A new connection (kept open); None if IPVS found no real server."""
        options.setdefault("protocol", self.protocol)
        return self.sim.connect(client, vip, vport, **options)

    def pick(self, client: str = CLIENT, **options: Any) -> str | None:
        """The letter of the real server a new (kept open) connection reached, or None."""
        conn = self.open(client, **options)
        return None if conn is None else letter(conn.real_server)

    def picks(self, n: int, client: str = CLIENT, **options: Any) -> list[str | None]:
        return [self.pick(client, **options) for _ in range(n)]

