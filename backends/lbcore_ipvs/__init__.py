"""IPVSBackend: the kernel's IPVS over generic netlink.

Ownership: lbcore owns the services whose virtual address or firewall mark was declared when the
backend was opened (``IPVSBackend(vips=[...], fwmarks=[...])``), as keepalived owns the virtual
servers of its configuration. ``read()`` returns only those; ``apply()`` refuses any op on
another service with :class:`~lbcore.errors.NotOwned` before sending anything. Nothing is stored
on disk, so ownership survives restarts and needs no clean-up.

IPVS has no transactions: ``apply()`` pipelines its requests, and if one fails it undoes, in
reverse order, every request that took effect; if the undo fails too it raises
:class:`~lbcore.errors.StateUnknown` listing what is in effect.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from lbcore._fields import as_address
from lbcore.backend import ALL_CAPABILITIES, RULE_CAPABILITIES, Capability, ConnectionCounts, Listings, prepare, require
from lbcore.enums import Scheduler
from lbcore.errors import (
    BackendError,
    BackendUnavailable,
    InvalidField,
    LBError,
    NotOwned,
    ParseError,
    StateUnknown,
)
from lbcore.formats import listing
from lbcore.model import IPAddress, ServiceKey, Sysctls, VirtualService
from lbcore.ops import AddRule, DeleteRule, DeleteService, Op, SetSysctls, service_key, service_keys
from lbcore.table import Table

SYSCTL_DIR = Path("/proc/sys/net/ipv4/vs")
FEW = 32  # up to this many services are read one by one; more, by one dump of them all
MODULE_DIR = "kernel/net/netfilter/ipvs"


def scheduler_available(scheduler: Scheduler) -> bool:
    """Whether this kernel has ip_vs_<name>: loaded or built in, or a module it can load."""
    name = f"ip_vs_{scheduler.value}"
    if Path("/sys/module", name).exists():
        return True
    modules = Path("/lib/modules", os.uname().release)
    return any((modules / MODULE_DIR).glob(f"{name}.ko*"))
PROC_CONN = Path("/proc/net/ip_vs_conn")
PROC_IPVS = Path("/proc/net/ip_vs")


def _conn_tab_size(text: str) -> int:
    """The connection table's size from /proc/net/ip_vs's first line (ip_vs_info_seq_show())."""
    first = text.split("\n", 1)[0]
    size = first.rpartition("(size=")[2].rstrip(")")
    if not size.isdigit():
        raise ParseError("/proc/net/ip_vs line 1", "size", first, "is not 'IP Virtual Server version ... (size=N)'")
    return int(size)


def _stats(kernel: dict[str, int]) -> listing.Stats:
    """The STATS64 nest of a GET_SERVICE or GET_DEST reply (absent attributes count 0)."""
    return listing.Stats(**{field.name: kernel.get(field.name, 0) for field in attrs.fields(listing.Stats)})


class IPVSBackend(ConnectionCounts, Listings):
    """The kernel's IPVS in the current network namespace.

    Args:
        vips: virtual addresses lbcore owns: every service on them is lbcore's.
        fwmarks: firewall marks lbcore owns.

    Raises:
        BackendUnavailable: pyroute2 is not installed, the kernel has no IPVS, or the process
            lacks CAP_NET_ADMIN.

    .. versionadded:: 0.1
    """

    name: ClassVar[str] = "ipvs"
    #: Everything IPVS can express (all but lbcore.rules, which are netfilter's); an opened
    #: backend drops the schedulers its kernel lacks.
    capabilities: frozenset[Capability] = ALL_CAPABILITIES - RULE_CAPABILITIES

    def __init__(self, vips: Iterable[object] = (), fwmarks: Iterable[int] = ()) -> None:
        try:
            from lbcore_ipvs import _codec as codec
            from lbcore_ipvs._netlink import IPVSSocket, NetlinkError
        except ImportError as exc:
            raise BackendUnavailable("ipvs", f"pyroute2 is missing ({exc}): pip install 'lbcore[ipvs]'") from exc
        self._codec = codec
        self._error = NetlinkError
        self.vips = frozenset(self._address(v) for v in vips)
        self.fwmarks = frozenset(fwmarks)
        try:
            self.socket = IPVSSocket()
        except NetlinkError as exc:
            raise BackendUnavailable("ipvs", f"no IPVS in this kernel or namespace ({exc.strerror}): "
                                     "modprobe ip_vs", errno=exc.errno) from exc
        except PermissionError as exc:
            raise BackendUnavailable("ipvs", "IPVS needs CAP_NET_ADMIN", errno=exc.errno) from exc
        try:  # every IPVS command, even a read, needs CAP_NET_ADMIN: find out now, not mid-read
            self.socket.request(codec.CMD_GET_INFO, [])
        except NetlinkError as exc:
            self.socket.close()
            raise BackendUnavailable("ipvs", f"IPVS refused this process ({exc.strerror}): it needs "
                                     "CAP_NET_ADMIN", errno=exc.errno) from exc
        missing = {s for s in Scheduler if not scheduler_available(s)}
        self.capabilities = IPVSBackend.capabilities - {Capability.for_scheduler(s) for s in missing}

    @staticmethod
    def _address(value: object) -> IPAddress:
        address = as_address(value)
        if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            raise InvalidField("IPVSBackend", "vips", value, "is not an IPv4 or IPv6 address")
        return address

    def owns(self, key: ServiceKey) -> bool:
        """Whether the service ``key`` is lbcore's."""
        return key.fwmark in self.fwmarks if key.fwmark else key.address in self.vips

    def close(self) -> None:
        """Close the netlink socket."""
        self.socket.close()

    # -- reading ---------------------------------------------------------------------------------

    def _kernel_services(self) -> list[Any]:
        c = self._codec
        return [c.parse_service(m) for m in self.socket.dump(c.CMD_GET_SERVICE, [])]

    def _kernel_dests(self, key: ServiceKey) -> list[Any]:
        c = self._codec
        return [c.parse_dest(m, key.family) for m in self.socket.dump(c.CMD_GET_DEST, c.service_nest(key))]

    def _kernel_service(self, key: ServiceKey) -> Any:
        """One service by GET_SERVICE, or None if the kernel has none with this key."""
        c = self._codec
        try:
            (msg,) = self.socket.request(c.CMD_GET_SERVICE, c.service_nest(key))
        except self._error as exc:
            if exc.errno == errno.ESRCH:
                return None
            raise
        return c.parse_service(msg)

    def read(self, keys: Collection[ServiceKey] | None = None) -> Table:
        """The services lbcore owns (or those of ``keys``), the global timeouts and the sysctls.

        Real servers come in the order they were added (the kernel lists the newest first).

        Raises:
            NotOwned: an owned VIP or mark holds a service lbcore cannot express (set by
                another tool): lbcore will not manage it.
        """
        if keys is not None and len(keys) <= FEW:
            found = [self._kernel_service(key) for key in keys if self.owns(key)]
        else:
            found = [ks for ks in self._kernel_services() if keys is None or ks.key in keys]
        services = []
        for ks in found:
            if ks is None or not self.owns(ks.key):
                continue
            if ks.service is None:
                raise NotOwned(f"the kernel service {ks.key} uses settings lbcore does not model")
            dests = [kd.real_server for kd in self._kernel_dests(ks.key)]
            services.append(attrs.evolve(ks.service, real_servers=tuple(reversed(dests))))
        (config,) = self.socket.request(self._codec.CMD_GET_CONFIG, [])
        return Table(services, timeouts=self._codec.parse_timeouts(config), sysctls=self._read_sysctls())

    @staticmethod
    def _read_sysctls() -> Sysctls:
        sysctls = Sysctls()
        for name in Sysctls.names():
            path = SYSCTL_DIR / name
            if path.exists():  # lblc(r)_expiration exist only while that module is loaded
                sysctls = sysctls.with_value(name, path.read_text().strip())
        return sysctls

    # -- applying ---------------------------------------------------------------------------------

    def _check_owned(self, ops: Sequence[Op]) -> None:
        for op in ops:
            if isinstance(op, (AddRule, DeleteRule)):  # netfilter's, not IPVS's: Unsupported
                require(self, op)
            key = service_key(op)
            if key is not None and not self.owns(key):
                raise NotOwned(f"{op}: {key} is not on a VIP or mark this backend owns "
                               f"(vips={sorted(map(str, self.vips))}, fwmarks={sorted(self.fwmarks)})")

    def apply(self, ops: Sequence[Op]) -> None:
        """Apply every op, or none: a failure undoes what took effect.

        Requests are pipelined (a window is sent before its acks are read), so the ops after a
        failed one may have taken effect too; they are undone with the rest.

        The ops are checked by :func:`~lbcore.prepare` against one read of the services
        they touch; its undo ops are what a failure carries out.

        Raises:
            NotOwned: an op on a service this backend does not own; nothing was sent.
            Unsupported: a rule op (netfilter's); nothing was sent.
            ServiceExists, ServiceNotFound, RealServerExists, RealServerNotFound: an op does not
                fit what the kernel holds (nothing was sent), or the kernel moved between that
                read and the request (what took effect was undone).
            Unsupported: the kernel lacks the scheduler module.
            BackendError: another kernel refusal; what took effect was undone.
            StateUnknown: the undo failed too; lists what is in effect.
        """
        self._check_owned(ops)
        prepared = prepare(self.read(service_keys(ops)), ops)
        ops, undo = prepared.ops, prepared.undo
        done: list[int] = []
        failure: tuple[int, OSError] | None = None
        i = 0
        while i < len(ops) and failure is None:
            if isinstance(ops[i], SetSysctls):
                try:
                    self._write_sysctls(ops[i])  # type: ignore[arg-type]
                    done.append(i)
                except OSError as exc:
                    failure = (i, exc)
                i += 1
                continue
            j = i
            while j < len(ops) and not isinstance(ops[j], SetSysctls):
                j += 1
            for k, code in zip(range(i, j), self._send_batch([self._request(op) for op in ops[i:j]])):
                if not code:
                    done.append(k)
                elif failure is None:
                    failure = (k, self._error(code, os.strerror(code)))
            i = j
        if failure is not None:
            k, cause = failure
            error = self._mapped(ops[k], cause.errno or 0, cause)
            self._undo([(ops[d], undo[d]) for d in done], error, ops[k])
            raise error from cause

    def _request(self, op: Op) -> tuple[int, Any]:
        """The netlink request of an op that is one (not SetSysctls; rules were refused)."""
        request = self._codec.request(op)
        assert request is not None, op
        return request

    def _send_batch(self, requests: list[tuple[int, Any]]) -> list[int]:
        """Send requests pipelined; the errno of each, 0 for success (tests wrap this)."""
        return self.socket.batch(requests)

    def _mapped(self, op: Op, code: int, exc: OSError) -> LBError:
        from lbcore_ipvs._errors import mapped

        return mapped(op, code, exc)

    @staticmethod
    def _write_sysctls(op: SetSysctls) -> None:
        for name in Sysctls.names():
            path = SYSCTL_DIR / name
            if path.exists():
                path.write_text(f"{int(getattr(op.sysctls, name))}\n")

    def _undo(self, done: list[tuple[Op, tuple[Op, ...]]], error: LBError, failed: Op) -> None:
        """Undo ``done`` (each op with its inverse ops) newest first; StateUnknown if that fails."""
        in_effect = [op for op, _ in done]
        for op, inverse_ops in reversed(done):
            for undo in inverse_ops:
                if isinstance(undo, SetSysctls):
                    try:
                        self._write_sysctls(undo)
                        continue
                    except OSError as exc:
                        code = exc.errno
                else:
                    (code,) = self._send_batch([self._request(undo)])
                if code:
                    raise StateUnknown("ipvs", f"{failed} failed ({error}) and undoing {op} failed "
                                       f"({os.strerror(code or 0)})", in_effect, failed, code)
            in_effect.pop()

    # -- backend-only features (not on Balancer) -----------------------------------------------------

    def zero(self, service: VirtualService | ServiceKey | None = None) -> None:
        """Zero the counters of one service and its real servers, or of everything (ipvsadm -Z).

        Raises:
            NotOwned: the service is not lbcore's.
        """
        c = self._codec
        if service is None:
            self.socket.request(c.CMD_ZERO, [])
            return
        key = service.key if isinstance(service, VirtualService) else service
        self._check_owned([DeleteService(key)])
        self.socket.request(c.CMD_ZERO, c.service_nest(key))

    def stats(self) -> dict[ServiceKey, dict[str, Any]]:
        """Per owned service: its 64-bit counters and rates, and each real server's, with its
        ActiveConn, InActConn and PersistConn."""
        out: dict[ServiceKey, dict[str, Any]] = {}
        for ks in self._kernel_services():
            if self.owns(ks.key):
                out[ks.key] = {"stats": ks.stats, "real_servers": {
                    kd.real_server.key: {"stats": kd.stats, "active": kd.active, "inactive": kd.inactive,
                                         "persistent": kd.persistent} for kd in self._kernel_dests(ks.key)}}
        return out

    def connection_counts(self, key: ServiceKey) -> dict[tuple[IPAddress, int], int]:
        """Each real server's ActiveConn + InActConn in the owned service ``key`` (one netlink
        dump of its real servers), as a graceful drain waits on; {} for no such service.

        .. versionadded:: 0.2
        """
        if not self.owns(key) or self._kernel_service(key) is None:
            return {}
        return {kd.real_server.key: kd.active + kd.inactive for kd in self._kernel_dests(key)}

    # -- ipvsadm's listings (lbcore.backend.Listings) ---------------------------------------------

    def snapshot(self) -> listing.Snapshot:
        """What ipvsadm's listings show of this kernel now (:mod:`lbcore.formats.listing`).

        Services are those lbcore owns, in the kernel's order, with their real servers (newest
        first), 64-bit statistics and connection counts read over netlink; connections are every
        entry of the namespace's ``/proc/net/ip_vs_conn`` (netlink lists none), in the kernel's
        hash order: a connection of a fwmark service does not say which service it is of.

        Raises:
            NotOwned: an owned VIP or mark holds a service lbcore cannot express.
            ParseError: ``/proc/net/ip_vs`` or ``/proc/net/ip_vs_conn`` is not in the kernel's format.

        .. versionadded:: 0.3
        """
        return self._snapshot(services=True, connections=True)

    def _snapshot(self, *, services: bool, connections: bool) -> listing.Snapshot:
        (config,) = self.socket.request(self._codec.CMD_GET_CONFIG, [])
        return listing.Snapshot(
            services=self._service_stats() if services else (),
            connections=listing.parse_proc_ip_vs_conn(PROC_CONN.read_text()) if connections else (),
            timeouts=self._codec.parse_timeouts(config),
            conn_tab_size=_conn_tab_size(PROC_IPVS.read_text()),
        )

    def _service_stats(self) -> list[listing.ServiceStats]:
        out = []
        for ks in self._kernel_services():
            if not self.owns(ks.key):
                continue
            if ks.service is None:
                raise NotOwned(f"the kernel service {ks.key} uses settings lbcore does not model")
            real_servers = [listing.RealServerStats(kd.real_server, kd.active, kd.inactive, kd.persistent,
                                                    _stats(kd.stats)) for kd in self._kernel_dests(ks.key)]
            out.append(listing.ServiceStats(ks.service, real_servers, _stats(ks.stats)))
        return out

    def status(self, *, stats: bool = False, rate: bool = False, thresholds: bool = False,
               persistent_conn: bool = False, tun_info: bool = False, exact: bool = False,
               nosort: bool = False) -> str:
        """``ipvsadm -Ln`` of the services lbcore owns: the guide's "Layer 4 Status".

        The options are :func:`lbcore.formats.listing.status`'s; the text is ipvsadm 1.31's (with
        every service lbcore's, it is ``ipvsadm -Ln``'s own).

        Raises:
            NotOwned: an owned VIP or mark holds a service lbcore cannot express.
            ParseError: ``/proc/net/ip_vs`` is not in the kernel's format.

        .. versionadded:: 0.3
        """
        return listing.status(self._snapshot(services=True, connections=False), stats=stats, rate=rate,
                              thresholds=thresholds, persistent_conn=persistent_conn, tun_info=tun_info,
                              exact=exact, nosort=nosort)

    def connections(self, *, persistent_conn: bool = False) -> str:
        """``ipvsadm -Lnc`` of the whole namespace, from /proc/net/ip_vs_conn (netlink has none).

        Raises:
            ParseError: the file is not in the kernel's format.

        .. versionchanged:: 0.3 ``persistent_conn`` is keyword-only.
        """
        snapshot = listing.Snapshot(connections=listing.parse_proc_ip_vs_conn(PROC_CONN.read_text()))
        return listing.connections(snapshot, persistent_conn=persistent_conn)

    def start_daemon(self, state: str, interface: str, syncid: int = 0) -> None:
        """Start the connection sync daemon (``state`` "master" or "backup"), as ipvsadm --start-daemon.

        Raises:
            InvalidField: an unknown state.
            BackendError: the kernel refused (EEXIST: already running), or did not answer within
                30 s.
        """
        c = self._codec
        if state not in c.DAEMON_STATES:
            raise InvalidField("IPVSBackend.start_daemon", "state", state, "is not master or backup")
        self._daemon(c.CMD_NEW_DAEMON, c.daemon_nest(state, interface, syncid), state, running=True)

    def stop_daemon(self, state: str) -> None:
        """Stop the sync daemon of ``state`` ("master" or "backup").

        Raises:
            InvalidField: an unknown state.
            BackendError: the kernel refused (ESRCH: not running), or did not answer within 30 s.
        """
        c = self._codec
        if state not in c.DAEMON_STATES:
            raise InvalidField("IPVSBackend.stop_daemon", "state", state, "is not master or backup")
        self._daemon(c.CMD_DEL_DAEMON, c.daemon_nest(state), state, running=False)

    def _daemon(self, cmd: int, nest: Any, state: str, running: bool) -> None:
        """Send a daemon command; when the kernel carried it out without a word, check the outcome.

        The kernel stays silent when a stop comes before the sync thread first ran
        (IPVSSocket.change()): the daemon is stopped all the same, as the kernel's list shows.
        """
        try:
            acknowledged = self.socket.change(cmd, nest)
        except self._error as exc:
            raise BackendError("ipvs", f"sync daemon: {exc.strerror}", errno=exc.errno) from exc
        if not acknowledged and any(d["state"] == state for d in self.daemons()) != running:
            raise BackendError("ipvs", f"the kernel did not answer {self._codec.CMD_NAMES[cmd]}, and the {state} "
                               f"sync daemon is {'not' if running else 'still'} running", errno=errno.EINTR)

    def daemons(self) -> list[dict[str, Any]]:
        """The running sync daemons: state, interface, syncid (ipvsadm -L --daemon)."""
        c = self._codec
        return [c.parse_daemon(msg) for msg in self.socket.dump(c.CMD_GET_DAEMON, [])]

