import pytest

from lbcore.backend import RULE_CAPABILITIES
from lbcore.composite import Composite
from lbcore.ops import AddService
from lbcore.sim import SimBackend
from lbcore.testing.conformance import BackendConformance, fixture


class TestSim(BackendConformance):
    backend = fixture("sim")


class TestSimComposite(BackendConformance):
    """A composite holds to the same contract: a simulated IPVS beside the simulated netfilter."""

    @pytest.fixture
    def backend(self) -> Composite:
        ipvs = SimBackend()
        ipvs.capabilities = ipvs.capabilities - RULE_CAPABILITIES  # as the ipvs backend: no rules
        return Composite(ipvs, SimBackend(dataplane="iptables"))


class TestSimDNAT(BackendConformance):
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
