"""SimDeployment: a deployment on the simulator, failures through its health checks or removed directly."""

from __future__ import annotations

import pytest

from lbcore import Deployment, InvalidField, RealServer, SystemClock, VirtualService
from lbcore.health import CheckedService, Policy, TCPCheck
from lbcore.sim import SimBackend
from lbcore.sim.deployment import SimDeployment

WEB = VirtualService(protocol="tcp", address="192.0.2.60", port=80, scheduler="rr",
                     real_servers=[RealServer("198.51.100.61", 80), RealServer("198.51.100.62", 80)])
DNS = VirtualService(protocol="udp", address="192.0.2.60", port=53, scheduler="rr",
                     real_servers=[RealServer("198.51.100.61", 53), RealServer("198.51.100.63", 53)])


def test_one_failure_is_found_by_the_checks_in_one_service_and_removed_at_once_in_the_other() -> None:
    policy = Policy(interval=5, timeout=2, fall=2, rise=1)
    deployed = SimDeployment(Deployment(services=[CheckedService(service=WEB, check=TCPCheck(), policy=policy),
                                                  DNS]), SimBackend())
    deployed.fail("198.51.100.61", at=3)
    deployed.run_until(3)
    assert deployed.weights(WEB) == {"198.51.100.61:80": 1, "198.51.100.62:80": 1}
    assert deployed.weights(DNS) == {"198.51.100.63:53": 1}  # no check: removed when it failed
    deployed.run_until(12)  # checks at 5 and 10 fail; the second times out at 12
    assert deployed.weights(WEB) == {"198.51.100.61:80": 0, "198.51.100.62:80": 1}
    assert [(e.kind.value, e.time) for e in deployed.health_events] == [("down", 12.0)]
    deployed.recover("198.51.100.61")
    assert deployed.weights(DNS) == {"198.51.100.61:53": 1, "198.51.100.63:53": 1}
    deployed.advance(5)
    assert deployed.weights(WEB) == {"198.51.100.61:80": 1, "198.51.100.62:80": 1}
    assert [(c.kind, c.time, c.service) for c in deployed.changes] == [
        ("fail", 3.0, None), ("removed", 3.0, "-u 192.0.2.60:53"), ("recover", 12.0, None),
        ("restored", 12.0, "-u 192.0.2.60:53")]


def test_what_it_refuses() -> None:
    deployed = SimDeployment(Deployment(services=[WEB]), SimBackend())
    deployed.advance(10)
    with pytest.raises(InvalidField, match="is not a real server of the deployment"):
        deployed.fail("192.0.2.99")
    with pytest.raises(InvalidField, match="is not a time from now"):
        deployed.fail("198.51.100.61", at=5)
    with pytest.raises(InvalidField, match="must be named"):
        SimDeployment(Deployment(services=[WEB, DNS]), SimBackend()).weights()
    with pytest.raises(InvalidField, match="VirtualClock"):
        SimDeployment(Deployment(services=[WEB]), SimBackend(clock=SystemClock()))
