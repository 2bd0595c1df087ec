from lbcore.testing.conformance import BackendConformance, fixture


class TestSim(BackendConformance):
    backend = fixture("sim")
