from lbcore.testing.conformance import BackendConformance, fixture


class TestSim(BackendConformance):
    backend = fixture("sim")


class TestSimDNAT(BackendConformance):
    """The simulator of the iptables backend's DNAT balancer refuses what that backend refuses."""

    backend = fixture("sim", dataplane="iptables", weighted="random")
