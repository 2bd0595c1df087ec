from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import pytest

from lbcore.backend import RULE_CAPABILITIES, Backend
from lbcore.composite import Composite
from lbcore.errors import BackendError
from lbcore.ops import AddService
from lbcore.sim import SimBackend
from lbcore.sim._dataplane import IPVSDataPlane
from lbcore.testing.conformance import VIP, BackendConformance, fixture


@attrs.define
class Injected:
    fired: bool = False


@contextmanager
def sim_fault(backend: Backend, at: int) -> Iterator[Injected]:
    """Fail the simulated data plane at its step ``at``: the IPVS plane's op ``at`` of a commit,
    after the ops before it were carried out; the DNAT plane's rule load, after it took effect.
    Steps are counted over every simulator of a composite, in the order they happen."""
    injected = Injected()
    steps = 0
    sims = [b for b in (backend.backends if isinstance(backend, Composite) else [backend])
            if isinstance(b, SimBackend)]
    patched: list[tuple[Any, str]] = []

    def step() -> None:
        nonlocal steps
        steps += 1
        if steps - 1 == at and not injected.fired:
            injected.fired = True
            raise BackendError("sim", f"a fault injected at step {at}")

    def wrap(plane: Any, name: str, before: bool) -> None:
        real: Callable[..., Any] = getattr(plane, name)

        def faulty(*args: Any) -> Any:
            if before:
                step()
            result = real(*args)
            if not before:
                step()
            return result

        setattr(plane, name, faulty)
        patched.append((plane, name))

    for sim in sims:
        plane = sim._plane
        if isinstance(plane, IPVSDataPlane):
            wrap(plane, "_carry_out", before=True)
        else:
            wrap(plane, "load", before=False)
    try:
        yield injected
    finally:
        for plane, name in patched:
            delattr(plane, name)


class SimConformance(BackendConformance):
    exact_order = True

    @pytest.fixture
    def fault(self) -> Callable[[Backend, int], Any]:
        return sim_fault

    def view(self, backend: Backend) -> object:
        """Besides the table and listing: where a new connection from each of a few clients would go."""
        assert isinstance(backend, SimBackend)
        reached = [backend.which(f"203.0.113.{n}", VIP, port, protocol=proto)
                   for n in range(1, 9) for port, proto in ((80, "tcp"), (443, "tcp"), (53, "udp"))]
        return super().view(backend), reached, backend.which("203.0.113.1", VIP, 80, mark=1)


class TestSim(SimConformance):
    backend = fixture("sim")


class TestSimComposite(BackendConformance):
    """A composite holds to the same contract: a simulated IPVS beside the simulated netfilter."""

    @pytest.fixture
    def fault(self) -> Callable[[Backend, int], Any]:
        return sim_fault

    @pytest.fixture
    def backend(self) -> Composite:
        ipvs = SimBackend()
        ipvs.capabilities = ipvs.capabilities - RULE_CAPABILITIES  # as the ipvs backend: no rules
        return Composite(ipvs, SimBackend(dataplane="iptables"))


class TestSimDNAT(SimConformance):
    """The simulator of the iptables backend's DNAT balancer refuses what that backend refuses."""

    backend = fixture("sim", dataplane="iptables", weighted="random")


def test_a_stale_op_leaves_the_simulated_data_plane_as_it_was() -> None:
    # Beyond read() and the counts: the director's services, dests and scheduling, entry by entry.
    from lbcore import Balancer, RealServer, ServiceExists, ServiceNotFound
    from lbcore.ops import AddRealServer, DeleteService
    from lbcore.testing.conformance import web

    sim = SimBackend()
    lb = Balancer(sim)
    lb.add_service(web())
    conn = sim.connect("203.0.113.1", "192.0.2.10", 80)
    assert conn is not None

    def plane() -> tuple[object, ...]:
        svc = sim.director.services[web().key]
        return (sorted(map(str, sim.director.services)),
                [(d.address, d.port, d.weight, d.activeconns, d.inactconns) for d in svc.dests],
                len(sim.director.conns), sim.which("203.0.113.2", "192.0.2.10", 80))

    before = plane()
    with pytest.raises(ServiceExists):
        sim.apply([AddRealServer(web().key, RealServer("198.51.100.4", 80, forward="nat")),
                   DeleteService(web().key), *lb.plan([web()]), AddService(web().settings),
                   AddService(web().settings)])
    with pytest.raises(ServiceNotFound):
        sim.apply([DeleteService(web().key), DeleteService(web().key)])
    assert plane() == before
