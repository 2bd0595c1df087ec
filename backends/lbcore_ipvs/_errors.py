"""Kernel errors of IPVS commands, mapped once by (operation, errno) as ipvsadm's ipvs_strerror does."""

from __future__ import annotations

from errno import EEXIST, EINVAL, ENOENT, EPERM, ERANGE, ESRCH

from lbcore.backend import Capability
from lbcore.errors import (
    BackendError,
    BackendUnavailable,
    LBError,
    RealServerExists,
    RealServerNotFound,
    ServiceExists,
    ServiceNotFound,
    Unsupported,
)
from lbcore.ops import AddService, EditService, Op, OpKind

K = OpKind
_CONFLICTS: dict[tuple[OpKind, int], type[LBError]] = {
    (K.ADD_SERVICE, EEXIST): ServiceExists,
    (K.EDIT_SERVICE, ESRCH): ServiceNotFound,
    (K.DELETE_SERVICE, ESRCH): ServiceNotFound,
    (K.ADD_REAL_SERVER, ESRCH): ServiceNotFound,
    (K.EDIT_REAL_SERVER, ESRCH): ServiceNotFound,
    (K.DELETE_REAL_SERVER, ESRCH): ServiceNotFound,
    (K.ADD_REAL_SERVER, EEXIST): RealServerExists,
    (K.EDIT_REAL_SERVER, ENOENT): RealServerNotFound,
    (K.DELETE_REAL_SERVER, ENOENT): RealServerNotFound,
}
# "Scheduler or persistence engine not found": the kernel could not load ip_vs_<name>.
_MODULE_MISSING = {(K.ADD_SERVICE, ENOENT), (K.EDIT_SERVICE, ENOENT)}


def mapped(op: Op, code: int, cause: OSError) -> LBError:
    """The typed error for ``op`` failing with ``code``; raise it ``from cause``."""
    kind = op.kind
    if (kind, code) in _CONFLICTS:
        return _CONFLICTS[kind, code](f"the kernel refused {op}: {cause.strerror} (another program changed IPVS?)")
    if (kind, code) in _MODULE_MISSING and isinstance(op, (AddService, EditService)):
        svc = op.service
        engine = svc.persistence.engine if svc.persistence is not None else None
        # ENOENT does not say which of the two is missing: name both, the scheduler's capability first.
        missing = f"module ip_vs_{svc.scheduler.value}" + (f" or ip_vs_pe_{engine.value}" if engine else "")
        return Unsupported("ipvs", Capability.for_scheduler(svc.scheduler), f"the kernel has no {missing}")
    if code == EPERM:
        return BackendUnavailable("ipvs", "changing IPVS needs CAP_NET_ADMIN", op, code)
    if code in (EINVAL, ERANGE):
        return BackendError("ipvs", f"the kernel refused {op} as invalid ({cause.strerror}); a real server "
                            "must be a routable unicast address", op, code)
    return BackendError("ipvs", f"{op} failed: {cause.strerror}", op, code)
