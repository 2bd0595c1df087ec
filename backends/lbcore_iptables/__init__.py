"""IPTablesBackend: netfilter rules through python-iptables (libiptc), and a DNAT balancer.

It carries out two kinds of op. The rules of :mod:`lbcore.rules` (firewall marks, Auto-NAT,
redirects, policy routes) are what an IPVS deployment needs beside IPVS; virtual services become
the DNAT balancer of :mod:`lbcore.dnat`, for hosts without IPVS.

Ownership: everything lives in ``LBCORE-*`` chains, reached from built-in chains by jumps that
carry the comment ``lbcore``; a chain is lbcore's by its first rule, the owner mark, not by its
name (see ``lbcore_iptables/_layout.py``). Policy routes and loopback VIPs carry routing protocol
219 (:data:`lbcore.rules.RTPROT_LBCORE`). Nothing else is read or changed; a foreign object where
lbcore must write raises :class:`~lbcore.errors.NotOwned`.

Crash safety: each object lives in one table or in rtnetlink, each read on its own, and the
rtnetlink steps are ordered and idempotent (``_routes.py``), so whatever an apply killed at any
point leaves reads back as a state the next plan completes (docs/design.md, "Crash safety").

Atomicity: libiptc replaces a whole table in one call, so an apply is one commit per table it
touches (nat, mangle), made under the xtables lock that ``iptables -w`` takes. When another
program commits in between anyway (EAGAIN), the edit is redone on a fresh copy of the table and
committed again. If a later commit or the routes fail, the tables already committed are edited
back; if that fails too, :class:`~lbcore.errors.StateUnknown` says what is in effect.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import os
import shutil
import sysconfig
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from lbcore import dnat
from lbcore.backend import Capability, prepare
from lbcore.errors import BackendError, BackendUnavailable, InvalidField, LBError, ParseError, StateUnknown
from lbcore.formats.ipvsadm import parse_save
from lbcore.model import ServiceKey, VirtualService
from lbcore.ops import AddRule, DeleteRule, Op, service_keys
from lbcore.rules import LoopbackVIP, PolicyRoute, Rule, RuleKey, rule_from_text
from lbcore.table import Table
from lbcore_iptables._edit import Change

#: The lock iptables-legacy takes with ``-w`` (xtables.h XT_LOCK_NAME).
XTABLES_LOCK = Path(os.environ.get("XTABLES_LOCKFILE", "/run/xtables.lock"))
#: Commits retried after EAGAIN (another program committed between our read and our commit).
RETRIES = 20
RuleChange = tuple[Rule | None, Rule | None]  # (as it is, as it is to be), as _edit.Change

#: Set to 1 to write legacy rules on a host whose iptables is the nf_tables variant.
LEGACY_OVERRIDE_ENV = "LBCORE_IPTABLES_LEGACY"


def iptables_variant() -> str | None:
    """"nf_tables" or "legacy": which xtables the host's ``iptables`` command drives (None: none)."""
    path = shutil.which("iptables")
    if path is None:
        return None
    target = os.path.basename(os.path.realpath(path))
    if "nft" in target:
        return "nf_tables"
    return "legacy"


def _help_python_iptables_find_libxtables() -> None:
    """Name the directory of libxtables and libip4tc for python-iptables, unless the user did.

    It finds them through ctypes.util.find_library, which reads ldconfig's cache; where that fails
    (inside user-mode Linux it does), IPTABLES_LIBDIR is where it looks next.
    """
    if "IPTABLES_LIBDIR" in os.environ:
        return
    triplet = sysconfig.get_config_var("MULTIARCH") or ""
    for directory in (f"/usr/lib/{triplet}", f"/lib/{triplet}", "/usr/lib64", "/usr/lib", "/lib"):
        if glob.glob(os.path.join(directory, "libxtables.so.*")):
            os.environ["IPTABLES_LIBDIR"] = directory
            return


class IPTablesBackend:
    """Netfilter in the current network namespace, through libiptc.

    Args:
        weighted: ``"random"`` accepts wrr services as weighted random (statistic ``--mode
            random``: each real server gets its weight's share on average, in no fixed order);
            without it wrr is refused, since no netfilter match interleaves by weight.
        legacy_beside_nft: write legacy xtables even where the host's ``iptables`` is the
            nf_tables variant (or set ``LBCORE_IPTABLES_LEGACY=1``).
        lock_timeout: seconds to wait for the xtables lock.

    Raises:
        BackendUnavailable: python-iptables is missing, the host's iptables is the nf_tables
            variant (and no override), or the process lacks CAP_NET_ADMIN.
        InvalidField: ``weighted`` is not None or "random".

    .. versionadded:: 0.2
    """

    name: ClassVar[str] = "iptables"
    capabilities: frozenset[Capability] = dnat.capabilities(None)

    def __init__(self, *, weighted: str | None = None, legacy_beside_nft: bool = False,
                 lock_timeout: float = 10.0) -> None:
        if weighted not in (None, dnat.WEIGHTED_RANDOM):
            raise InvalidField("IPTablesBackend", "weighted", weighted, "is not None or 'random'")
        legacy_beside_nft = legacy_beside_nft or os.environ.get(LEGACY_OVERRIDE_ENV) == "1"
        if iptables_variant() == "nf_tables" and not legacy_beside_nft:
            raise BackendUnavailable(
                "iptables",
                "this host's iptables is the nf_tables variant (iptables-nft): the legacy rules "
                "python-iptables writes would be invisible to `iptables -L` and `nft list ruleset`. "
                "Switch the host with `update-alternatives --set iptables /usr/sbin/iptables-legacy`, "
                f"or open the backend with legacy_beside_nft=True (or {LEGACY_OVERRIDE_ENV}=1) to "
                "write legacy rules anyway",
            )
        _help_python_iptables_find_libxtables()
        try:
            import iptc
            from iptc import ip4tc
        except (ImportError, OSError, TypeError) as exc:  # OSError, TypeError: no libxtables/libiptc
            raise BackendUnavailable(
                "iptables", f"python-iptables is missing ({exc}): pip install 'lbcore[iptables]' "
                "and apt-get install iptables") from exc
        self._iptc = iptc
        self._lib = ip4tc
        self.capabilities = dnat.capabilities(weighted)
        self.lock_timeout = lock_timeout
        self.weighted = weighted
        self.retries = 0  # commits redone after EAGAIN, for tests and benchmarks
        self._commits = 0
        self._parsed: dict[str, VirtualService] = {}  # a service's descriptors -> the service
        try:
            self._table("nat")
        except BackendError as exc:
            raise BackendUnavailable("iptables", f"netfilter refused this process ({exc}): it needs "
                                     "CAP_NET_ADMIN", errno=exc.errno) from exc
        self._routes: Any = None

    @property
    def commits(self) -> int:
        """Table commits that succeeded since the backend was opened (an apply makes one per table
        it changes, undos included); read-only, for tests and benchmarks.

        .. versionadded:: 0.2
        """
        return self._commits

    def close(self) -> None:
        """Release the libiptc handles and the routing socket."""
        for name in ("nat", "mangle"):
            cached = self._iptc.Table._cache.pop(name, None)
            if cached is not None:
                cached.autocommit = False
                cached.close()
        if self._routes is not None:
            self._routes.close()
            self._routes = None

    # -- libiptc ------------------------------------------------------------------------------------

    def _errno(self) -> int:
        return int(self._lib._get_errno_loc()[0])

    def _table(self, name: str) -> Any:
        """A fresh copy of table ``name`` (iptc_init), changed only by commit()."""
        iptc = self._iptc
        try:
            table = iptc.Table(name, autocommit=False)
            table.autocommit = False
            table.refresh()
        except iptc.IPTCError as exc:
            raise BackendError("iptables", f"cannot read table {name}: {exc}", errno=self._errno()) from exc
        return table

    def _chains(self, table: Any) -> set[str]:
        lib, handle = table._iptc, table._handle
        names = set()
        chain = lib.iptc_first_chain(handle)
        while chain:
            names.add(chain.decode())
            chain = lib.iptc_next_chain(handle)
        return names

    def _descriptors(self, table: Any, chain: str) -> list[str]:
        """The descriptor of each entry of one of lbcore's chains ("" where it has none)."""
        from lbcore_iptables import _edit

        return [text for text, _ in _edit.listing(table, chain)]

    # -- reading ------------------------------------------------------------------------------------

    def read(self, keys: Collection[ServiceKey] | None = None) -> Table:
        """The services and rules lbcore owns (with ``keys``: only those services, and the rules).

        A service is read from the header of its own chain, found by name; the rules from
        lbcore's dispatch chains. Of each entry only the comments are decoded: the cost does not
        grow with foreign rules, and with ``keys`` not with the number of services either.

        Raises:
            BackendError: netfilter could not be read.
        """
        return self._read(self._table("nat"), self._table("mangle"), keys)

    def _read(self, nat: Any, mangle: Any | None, keys: Collection[ServiceKey] | None) -> Table:
        """The state in these table copies; without ``mangle``, services only (rules None).

        Only lbcore's own chains are read (their first rule is the owner mark); in them, an entry
        whose descriptor does not parse, or a service chain whose descriptor names another chain,
        is another program's, and is left out, as are chains with lbcore's names but not its mark.
        """
        from lbcore_iptables import _edit
        from lbcore_iptables import _layout as layout

        if keys is None:
            chains = [name for name in self._chains(nat) if name.startswith("LBCORE-S-")]
        else:
            chains = [c for c in map(layout.service_chain, keys) if nat.is_chain(c)]
        # A full read keeps what it parsed, for the next one (Balancer.apply reads in full each time).
        parsed, self._parsed = self._parsed, ({} if keys is None else self._parsed)
        services = []
        for chain in chains:
            if not _edit.owned(nat, chain):
                continue
            text = self._header(nat, chain)
            svc = parsed.get(text)
            if svc is None:  # one service at a time: parse_save's cost grows faster than its lines
                svc = _one_service(text)
                if svc is None:
                    continue
            if layout.service_chain(svc.key) != chain:  # a descriptor copied into another chain
                continue
            if keys is not None and svc.key not in keys:  # two keys, one name: refuse rather than overwrite
                raise BackendError("iptables", f"the chain {chain} of service {svc.key} has the name "
                                   f"of a service in {sorted(map(str, keys))}: lbcore cannot hold both")
            if keys is None:
                self._parsed[text] = svc
            services.append(svc)
        if mangle is None:
            return Table(services)
        rules: dict[RuleKey, Rule] = {}
        for table_name, chain in layout.RULE_CHAINS.values():
            table = mangle if table_name == "mangle" else nat
            if not _edit.owned(table, chain):
                continue
            for text in self._descriptors(table, chain):
                if text:
                    try:
                        rule = rule_from_text(text)
                    except ParseError:  # an operator's comment in lbcore's chain: not lbcore's rule
                        continue
                    rules[rule.key] = rule
        for route in self._policy_routes():
            rules[route.key] = route
        return Table(services, rules=rules)

    def _header(self, nat: Any, chain: str) -> str:
        """The ipvsadm lines in the comments of a service chain's header rules (after its owner mark)."""
        from lbcore_iptables import _entries
        from lbcore_iptables import _layout as layout

        parts = []
        entry = nat.next_rule(nat.first_rule(chain))
        while entry:
            try:
                text = _entries.comments_of(_entries.raw_entry(entry))
            except ValueError:
                break
            if not text:
                break
            parts.append(text)
            entry = nat.next_rule(entry)
        return "".join(parts).replace(layout.LINE_SEPARATOR, "\n") + "\n"

    # -- applying -----------------------------------------------------------------------------------

    def apply(self, ops: Sequence[Op]) -> None:
        """Apply every op with one commit per table, or none.

        Raises:
            NotOwned: a chain, route or address that is not lbcore's stands where the change must go;
                nothing was changed.
            ServiceExists, ServiceNotFound, RealServerExists, RealServerNotFound, RuleExists,
                RuleNotFound: the state moved since the caller read it; nothing was changed.
            BackendError: netfilter or routing refused a change; what was committed was undone.
            StateUnknown: and the undo failed too.
        """
        ops = list(ops)
        keys = service_keys(ops)
        with_rules = any(isinstance(op, (AddRule, DeleteRule)) for op in ops)
        done: list[str] = []
        services: dict[ServiceKey, Change] = {}
        rules: dict[RuleKey, RuleChange] = {}
        try:
            with self._lock():
                # Read and check on the copies that the first commit attempt edits: one iptc_init
                # per table (it copies the whole table), and the preconditions are checked against
                # the state committed over, since iptables -w and other lbcore writers wait on the lock.
                fresh = {"nat": self._table("nat"), "mangle": self._table("mangle") if with_rules else None}
                prepared = prepare(self._read(fresh["nat"], fresh["mangle"], keys), ops)
                before, after = prepared.before, prepared.after
                services = {k: (before.services.get(k), after.services.get(k)) for k in keys}
                old_rules, new_rules = before.rules or {}, after.rules or {}
                rules = {k: (old_rules.get(k), new_rules.get(k)) for k in {*old_rules, *new_rules}
                         if old_rules.get(k) != new_rules.get(k)}
                for name in ("nat", "mangle"):
                    if self._commit(name, services, rules, fresh[name]):
                        done.append(name)
            self._set_routes({k: new for k, (_, new) in rules.items()})
        except BaseException as exc:
            if not done:
                raise
            try:
                with self._lock():
                    for name in done:
                        self._commit(name, _swapped(services), _swapped(rules))
            except Exception as undo_exc:
                raise StateUnknown("iptables", f"apply failed ({exc}) and so did its undo ({undo_exc})",
                                   [f"table {n} committed" for n in done]) from exc
            raise

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Hold the xtables lock, as ``iptables -w`` does, so its commits and ours take turns."""
        XTABLES_LOCK.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(XTABLES_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise BackendError("iptables", f"the xtables lock {XTABLES_LOCK} is held by "
                                           f"another program for over {self.lock_timeout} s") from None
                    time.sleep(0.001)
            yield
        finally:
            os.close(fd)

    def _commit(self, name: str, services: Mapping[ServiceKey, Change], rules: Mapping[RuleKey, RuleChange],
                table: Any = None) -> bool:
        """Edit table ``name`` from the old side of ``services`` and ``rules`` to the new, and commit.

        ``table``: a copy just taken under the lock, for the first attempt; later ones take their own.
        Returns False when the table has nothing to change.

        Raises:
            BackendError: the kernel refused the commit; the table holds what it held.
            StateUnknown: the commit failed, and the table holds neither side (see below).
        """
        from lbcore_iptables import _edit

        new_rules = {k: new for k, (_, new) in rules.items()}
        if not _edit.touches(name, services, new_rules):
            return False
        for attempt in range(RETRIES + 1):
            if table is None or attempt:
                table = self._table(name)
            if not _edit.edit(table, name, services, new_rules):
                return False
            if table._iptc.iptc_commit(table._handle) == 1:
                self._commits += 1
                return True
            code = self._errno()
            if code == errno.EAGAIN and attempt < RETRIES:
                self.retries += 1
                time.sleep(0.001 * (attempt + 1))
                continue
            # libiptc commits in two steps: the table, then its old counters back. A program that
            # skips the xtables lock and commits in between fails the second step (EINVAL) after
            # the first took effect. So a failure is told apart by what the table holds now.
            message = f"commit of table {name} failed: {os.strerror(code)}"
            if self._holds(name, services, rules, new=True):
                self._commits += 1
                return True
            if not self._holds(name, services, rules, new=False):
                raise StateUnknown("iptables", message, [f"part of table {name}"], errno=code)
            raise BackendError("iptables", message, errno=code)
        raise AssertionError("unreachable")

    def _holds(self, name: str, services: Mapping[ServiceKey, Change], rules: Mapping[RuleKey, RuleChange],
               new: bool) -> bool:
        """Whether table ``name`` holds the new (or the old) side of ``services`` and ``rules`` now."""
        from lbcore_iptables import _edit

        side = 1 if new else 0
        now = self.read(services.keys())
        if name == "nat" and any(now.services.get(k) != change[side] for k, change in services.items()):
            return False
        held = now.rules or {}
        return all(held.get(k) == change[side] for k, change in rules.items() if _edit.TABLE_OF.get(k[0]) == name)

    # -- policy routes --------------------------------------------------------------------------------

    def _ipr(self) -> Any:
        if self._routes is None:
            try:
                from pyroute2 import IPRoute
            except ImportError as exc:
                raise BackendUnavailable("iptables", f"policy routes need pyroute2 ({exc}): "
                                         "pip install 'lbcore[iptables]'") from exc
            self._routes = IPRoute()
        return self._routes

    def _policy_routes(self) -> list[PolicyRoute | LoopbackVIP]:
        from lbcore_iptables import _routes

        return _routes.read(self._ipr)

    def _set_routes(self, rules: Mapping[RuleKey, Rule | None]) -> None:
        from lbcore_iptables import _edit, _routes

        changes = {k: r for k, r in rules.items() if k[0] not in _edit.TABLE_OF}
        if changes:
            _routes.apply(self._ipr(), changes)


def _one_service(text: str) -> VirtualService | None:
    """The one service a header describes, or None if it does not describe exactly one."""
    try:
        services = list(parse_save(text).services.values())
    except LBError:
        return None
    return services[0] if len(services) == 1 else None


def _swapped(changes: Mapping[Any, tuple[Any, Any]]) -> dict[Any, tuple[Any, Any]]:
    """The changes that take ``changes`` back."""
    return {k: (new, old) for k, (old, new) in changes.items()}
