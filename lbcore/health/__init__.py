"""Health checks and failover: checks, their policy, and the monitor that acts on them.

A failover plan, tested on the virtual clock (the same Monitor runs on asyncio with
:class:`AsyncioProber` against real servers)::

    >>> from lbcore import Balancer, RealServer, VirtualService
    >>> from lbcore.health import CheckedService, Monitor, Policy, SimProber, TCPCheck
    >>> from lbcore.sim import SimBackend
    >>> prober = SimProber()
    >>> web = VirtualService(protocol="tcp", address="192.0.2.1", port=80, scheduler="wlc",
    ...                      real_servers=[RealServer("198.51.100.1", 80), RealServer("198.51.100.2", 80)])
    >>> monitor = Monitor(Balancer(SimBackend(clock=prober.clock)), [CheckedService(
    ...     service=web, check=TCPCheck(), policy=Policy(interval=2, timeout=1, fall=3, rise=2),
    ...     fallback=RealServer("198.51.100.9", 80))], prober)
    >>> monitor.start()
    >>> prober.fleet.fail("198.51.100.1", at=10.5)
    >>> prober.fleet.fail("198.51.100.2", at=20.5)
    >>> prober.fleet.recover("198.51.100.1", at=40.5)
    >>> prober.run_until(60)
    >>> for e in monitor.events:
    ...     print(e.time, e.kind, e.address)
    17.0 down 198.51.100.1
    27.0 down 198.51.100.2
    27.0 quorum_down None
    27.0 fallback_on 198.51.100.9
    44.0 up 198.51.100.1
    44.0 quorum_up None
    44.0 fallback_off 198.51.100.9

.. versionadded:: 0.1
"""

from lbcore.health.checks import (
    Check,
    DNSCheck,
    ExecCheck,
    FixedCheck,
    HealthState,
    HTTPCheck,
    PingCheck,
    Policy,
    Probe,
    SMTPCheck,
    TCPCheck,
    UDPCheck,
    probe_for,
)
from lbcore.health.monitor import (
    Action,
    CheckedService,
    CheckResult,
    Event,
    EventKind,
    Monitor,
    Prober,
)
from lbcore.health.probers import AsyncioProber, LoopClock, ProbeFailed, SimFleet, SimProber

__all__ = [
    "Action",
    "AsyncioProber",
    "Check",
    "CheckResult",
    "CheckedService",
    "DNSCheck",
    "Event",
    "EventKind",
    "ExecCheck",
    "FixedCheck",
    "HTTPCheck",
    "HealthState",
    "LoopClock",
    "Monitor",
    "PingCheck",
    "Policy",
    "Probe",
    "ProbeFailed",
    "Prober",
    "SMTPCheck",
    "SimFleet",
    "SimProber",
    "TCPCheck",
    "UDPCheck",
    "probe_for",
]
