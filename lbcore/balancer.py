"""Balancer: the user API. It validates, plans and checks; the backend only carries out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, cast, overload

from lbcore.backend import Backend, prepare, require
from lbcore.errors import InvalidField
from lbcore.model import IPAddress, RealServer, ServiceKey, Sysctls, Timeouts, VirtualService
from lbcore.ops import (
    OP_CLASSES,
    AddRealServer,
    AddService,
    DeleteRealServer,
    DeleteService,
    EditRealServer,
    EditService,
    Op,
    SetSysctls,
    SetTimeouts,
    service_keys,
)
from lbcore.plan import plan
from lbcore.registry import open_backend
from lbcore.table import Table

if TYPE_CHECKING:
    # Python 3.11's TypeVar takes no default (PEP 696); typing_extensions' does, for mypy only.
    from typing_extensions import TypeVar

    #: The backend type of a Balancer; a bare ``Balancer`` is ``Balancer[Backend]``. Covariant: a
    #: ``Balancer[SimBackend]`` is a ``Balancer[Backend]`` (the backend is only read, never swapped).
    B = TypeVar("B", bound=Backend, default=Backend, covariant=True)
else:
    from typing import TypeVar

    B = TypeVar("B", bound=Backend, covariant=True)

Desired = Table | Iterable[VirtualService]
ServiceRef = VirtualService | ServiceKey


def _key(service: ServiceRef) -> ServiceKey:
    return service.key if isinstance(service, VirtualService) else service


class Balancer(Generic[B]):
    """Drive one backend: declare the desired state, or change it one ipvsadm verb at a time.

    Every change, declarative or imperative, runs the same path: each op is checked against the
    backend's capabilities (:class:`~lbcore.errors.Unsupported`) before the backend sees any of
    them, and against the table the backend holds (:func:`~lbcore.prepare`, in the
    backend's ``apply``) before anything changes.

    ``Balancer(SimBackend())`` is a ``Balancer[SimBackend]``, so ``lb.backend`` has the
    simulator's own methods for a type checker; ``Balancer("sim")`` (a name) is a
    ``Balancer[Backend]``.

    Args:
        backend: a backend object, or the name of an installed one ("sim", "ipvs").
        **options: passed to the backend when it is given by name.

    Raises:
        BackendUnavailable: the backend named is not installed or cannot run here.
        InvalidField: an option the named backend refuses.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2 generic in its backend.
    """

    backend: B

    @overload
    def __init__(self: Balancer[Backend], backend: str = "sim", **options: Any) -> None: ...

    @overload
    def __init__(self, backend: B, **options: Any) -> None: ...

    def __init__(self, backend: Any = "sim", **options: Any) -> None:
        # A name gives a Balancer[Backend] (the first overload), so the cast holds.
        self.backend = cast(B, open_backend(backend, **options)) if isinstance(backend, str) else backend

    def read(self) -> Table:
        """The state lbcore owns in the backend now."""
        return self.backend.read()

    def plan(self, desired: Desired) -> list[Op]:
        """The ops that would make the backend hold ``desired``; nothing is changed.

        Raises:
            InvalidField: ``desired`` holds something that is not a VirtualService.
        """
        return plan(self.read(), _as_table(desired))

    def check(self, ops: Sequence[Op]) -> Table:
        """Check ``ops`` against the backend's capabilities and current table; change nothing.

        Returns:
            The table the backend would hold after them.

        Raises:
            Unsupported: the backend cannot express an op.
            ServiceExists, ServiceNotFound, RealServerExists, RealServerNotFound, InvalidField:
                an op does not fit the current table.
        """
        ops = _as_ops(ops)
        for op in ops:
            require(self.backend, op)
        # Only the services the ops touch: the cost does not grow with the table. The same
        # prepare() the backend's apply runs, as a dry run.
        return prepare(self.backend.read(service_keys(ops)), ops).after

    def execute(self, ops: Sequence[Op]) -> None:
        """Check ``ops``, then have the backend apply them all, or none.

        The capabilities are checked here; the state, by the backend's ``apply``, which runs
        :func:`~lbcore.prepare` against what it reads under its own lock (one read per
        change, and the check is made against the state the change is made on).

        Raises:
            LBError: the errors of :meth:`check`, before anything changed.
            BackendError: the backend failed.
        """
        ops = _as_ops(ops)
        for op in ops:
            require(self.backend, op)
        if ops:
            self.backend.apply(ops)

    def apply(self, desired: Desired) -> list[Op]:
        """Make the backend hold ``desired`` with the fewest ops, and return them.

        Raises:
            InvalidField: ``desired`` is not a Table or a list of VirtualService (None is refused,
                not taken for "no services").
            LBError: the errors of :meth:`execute`.
        """
        ops = plan(self.read(), _as_table(desired))
        self.execute(ops)  # the backend checks the plan against what it holds then
        return ops

    # -- ipvsadm's verbs ----------------------------------------------------------------------

    def add_service(self, service: VirtualService) -> None:
        """Add ``service`` and its real servers (ipvsadm -A, then -a for each).

        Raises:
            ServiceExists, Unsupported, BackendError
        """
        self.execute(
            [AddService(service.settings)]
            + [AddRealServer(service.key, rs) for rs in service.real_servers]
        )

    def edit_service(self, service: VirtualService) -> None:
        """Replace a service's settings (ipvsadm -E); its real servers are left as they are.

        Raises:
            ServiceNotFound, Unsupported, BackendError
        """
        self.execute([EditService(service.settings)])

    def delete_service(self, service: ServiceRef) -> None:
        """Delete a service and its real servers (ipvsadm -D).

        Raises:
            ServiceNotFound, BackendError
        """
        self.execute([DeleteService(_key(service))])

    def add_real_server(self, service: ServiceRef, real_server: RealServer) -> None:
        """Add a real server (ipvsadm -a).

        Raises:
            ServiceNotFound, RealServerExists, InvalidField, Unsupported, BackendError
        """
        self.execute([AddRealServer(_key(service), real_server)])

    def edit_real_server(self, service: ServiceRef, real_server: RealServer) -> None:
        """Replace a real server's settings (ipvsadm -e).

        Raises:
            ServiceNotFound, RealServerNotFound, InvalidField, Unsupported, BackendError
        """
        self.execute([EditRealServer(_key(service), real_server)])

    def delete_real_server(self, service: ServiceRef, address: IPAddress, port: int) -> None:
        """Delete a real server (ipvsadm -d).

        Raises:
            ServiceNotFound, RealServerNotFound, BackendError
        """
        self.execute([DeleteRealServer(_key(service), address, port)])

    def set_timeouts(self, timeouts: Timeouts) -> None:
        """Set the tcp, tcpfin and udp timeouts (ipvsadm --set).

        Raises:
            Unsupported, BackendError
        """
        self.execute([SetTimeouts(timeouts)])

    def set_sysctls(self, sysctls: Sysctls) -> None:
        """Set the IPVS sysctls.

        Raises:
            Unsupported, BackendError
        """
        self.execute([SetSysctls(sysctls)])

    def close(self) -> None:
        """Close the backend."""
        self.backend.close()

    def __enter__(self) -> Balancer[B]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_ops(ops: object) -> list[Op]:
    if not isinstance(ops, Iterable) or isinstance(ops, (str, bytes)):
        raise InvalidField("Balancer", "ops", ops, "is not a list of ops")
    listed = list(ops)
    for op in listed:
        if not isinstance(op, OP_CLASSES):
            raise InvalidField("Op", "kind", op, "is not an lbcore op")
    return listed


def _as_table(desired: Desired) -> Table:
    if isinstance(desired, Table):
        return desired
    # None is a mistake, never "no services": that would delete them all. The Table checks each item.
    if not isinstance(desired, Iterable) or isinstance(desired, (str, bytes)):
        raise InvalidField("Balancer", "desired", desired, "is not a Table or a list of VirtualService")
    return Table(desired)
