"""lbcore: Linux layer-4 load balancing (IPVS) as Python objects, with a kernel-exact simulator.

One model, several backends: ``sim`` (the default; an in-memory IPVS on a virtual clock),
``ipvs`` (the kernel over generic netlink) and ``iptables`` (netfilter rules through libiptc: what
an IPVS deployment needs beside IPVS, and a DNAT balancer for hosts without it).
"""

from lbcore.backend import Backend, Capability, ConnectionCounts, ExplainsRefusals, Listings, Prepared, prepare
from lbcore.balancer import Balancer
from lbcore.clock import Clock, SystemClock, VirtualClock
from lbcore.composite import Composite
from lbcore.enums import (
    ForwardMethod,
    PersistenceEngine,
    Protocol,
    Scheduler,
    SchedulerFlag,
    TunnelChecksum,
    TunnelType,
)
from lbcore.errors import (
    BackendError,
    BackendUnavailable,
    Conflict,
    InvalidArguments,
    InvalidField,
    LBError,
    NotFound,
    NotOwned,
    ParseError,
    ProbeFailed,
    RealServerExists,
    RealServerNotFound,
    RuleExists,
    RuleNotFound,
    ServiceExists,
    ServiceNotFound,
    StateUnknown,
    Unsupported,
)
from lbcore.model import (
    Persistence,
    RealServer,
    ServiceKey,
    Sysctls,
    Timeouts,
    Tunnel,
    VirtualService,
)
from lbcore.ops import (
    AddRealServer,
    AddRule,
    AddService,
    DeleteRealServer,
    DeleteRule,
    DeleteService,
    EditRealServer,
    EditService,
    Op,
    SetSysctls,
    SetTimeouts,
    apply_op,
)
from lbcore.plan import plan
from lbcore.registry import open_backend
from lbcore.rules import AutoNat, FirewallMark, LoopbackVIP, PolicyRoute, Redirect, Rule
from lbcore.table import Table

__version__ = "0.3.0"

__all__ = [
    "AddRealServer",
    "AddRule",
    "AddService",
    "AutoNat",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "Balancer",
    "Capability",
    "Clock",
    "Composite",
    "Conflict",
    "ConnectionCounts",
    "DeleteRealServer",
    "DeleteRule",
    "DeleteService",
    "EditRealServer",
    "EditService",
    "ExplainsRefusals",
    "FirewallMark",
    "ForwardMethod",
    "InvalidArguments",
    "InvalidField",
    "LBError",
    "Listings",
    "LoopbackVIP",
    "NotFound",
    "NotOwned",
    "Op",
    "ParseError",
    "Persistence",
    "PersistenceEngine",
    "PolicyRoute",
    "Prepared",
    "ProbeFailed",
    "Protocol",
    "RealServer",
    "RealServerExists",
    "RealServerNotFound",
    "Redirect",
    "Rule",
    "RuleExists",
    "RuleNotFound",
    "Scheduler",
    "SchedulerFlag",
    "ServiceExists",
    "ServiceKey",
    "ServiceNotFound",
    "SetSysctls",
    "SetTimeouts",
    "StateUnknown",
    "Sysctls",
    "SystemClock",
    "Table",
    "Timeouts",
    "Tunnel",
    "TunnelChecksum",
    "TunnelType",
    "Unsupported",
    "VirtualClock",
    "VirtualService",
    "apply_op",
    "open_backend",
    "plan",
    "prepare",
]
