"""Composite: several backends as one, so that a change spanning them is applied as one.

An IPVS deployment is IPVS plus netfilter: a firewall-mark service lives in IPVS, the MARK rules
that feed it in iptables. ``Composite(IPVSBackend(...), IPTablesBackend())`` (or
``open_backend("ipvs+iptables", ipvs={...}, iptables={...})``) takes both in one apply:

- services, timeouts and sysctls go to the first backend; each rule (:mod:`lbcore.rules`) goes to
  the first backend that can express it;
- the ops are carried out in their order (plan puts rule deletions before the services change and
  rule additions after), one ``apply`` per run of consecutive ops for one backend;
- if a later run fails, the runs already applied are undone, newest first; if an undo fails too,
  :class:`~lbcore.errors.StateUnknown` lists what is in effect.

.. versionadded:: 0.2
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import assert_never

import attrs

from lbcore.backend import RULE_CAPABILITIES, Backend, Capability, ConnectionCounts, needs, prepare
from lbcore.errors import InvalidField, StateUnknown
from lbcore.model import IPAddress, ServiceKey
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
    Prepared,
    SetSysctls,
    SetTimeouts,
    service_keys,
)
from lbcore.rules import Rule, RuleKey
from lbcore.table import Table


class Composite(ConnectionCounts):
    """The first backend holds the services; the others add the rules it cannot express.

    Args:
        backends: two or more opened backends, the service-holding one first.

    Raises:
        InvalidField: fewer than two backends.
    """

    def __init__(self, *backends: Backend) -> None:
        if len(backends) < 2:
            raise InvalidField("Composite", "backends", len(backends), "is not two or more backends")
        self.backends = backends
        first = backends[0].capabilities
        self.capabilities: frozenset[Capability] = first | frozenset(
            c for b in backends[1:] for c in b.capabilities if c in RULE_CAPABILITIES)

    @property
    def name(self) -> str:
        """Names of the backends joined by "+", such as "ipvs+iptables"."""
        return "+".join(b.name for b in self.backends)

    def _target(self, op: Op) -> Backend:
        if isinstance(op, (AddRule, DeleteRule)):
            wanted = needs(op)
            return next((b for b in self.backends if wanted <= b.capabilities), self.backends[0])
        if isinstance(op, (AddService, EditService, DeleteService, AddRealServer, EditRealServer,
                           DeleteRealServer, SetTimeouts, SetSysctls)):
            return self.backends[0]
        assert_never(op)

    def read(self, keys: Collection[ServiceKey] | None = None) -> Table:
        """The first backend's services, timeouts and sysctls, and every backend's rules."""
        table = self.backends[0].read(keys)
        rules: dict[RuleKey, Rule] = dict(table.rules or {})
        for backend in self.backends[1:]:
            rules.update(backend.read(()).rules or {})
        return attrs.evolve(table, rules=rules)

    def apply(self, ops: Sequence[Op]) -> None:
        """Apply every op, each by its backend, or none.

        Raises:
            ServiceExists, ServiceNotFound, RealServerExists, RealServerNotFound, RuleExists,
                RuleNotFound: an op does not fit the joined state; no backend was changed.
            LBError: what a backend's ``apply`` raised, once the runs already applied were undone.
            StateUnknown: an undo failed.
        """
        # Every op against the joined state first: a stale op must change no backend at all.
        # Each backend's apply checks its run again against what it holds, under its own lock.
        prepared = prepare(self.read(service_keys(ops)), ops)
        runs: list[tuple[Backend, int, int]] = []  # a backend and its run prepared.ops[start:stop]
        for i, op in enumerate(prepared.ops):
            target = self._target(op)
            if runs and runs[-1][0] is target:
                runs[-1] = (target, runs[-1][1], i + 1)
            else:
                runs.append((target, i, i + 1))
        done: list[tuple[Backend, int, int]] = []
        for backend, start, stop in runs:
            try:
                backend.apply(prepared.ops[start:stop])
            except Exception as exc:
                self._undo(prepared, done, exc)
                raise
            done.append((backend, start, stop))

    def _undo(self, prepared: Prepared, done: list[tuple[Backend, int, int]], cause: Exception) -> None:
        while done:
            backend, start, stop = done[-1]
            try:
                backend.apply(prepared.undo_of(start, stop))
            except Exception as exc:
                applied = list(prepared.ops[:stop])
                raise StateUnknown(self.name, f"{cause}; undo on {backend.name} failed: {exc}",
                                   applied) from cause
            done.pop()

    def connection_counts(self, key: ServiceKey) -> dict[tuple[IPAddress, int], int] | None:
        """The first backend's connection counts (it holds the services), None if it has none."""
        first = self.backends[0]
        return first.connection_counts(key) if isinstance(first, ConnectionCounts) else None

    def close(self) -> None:
        """Close every backend."""
        for backend in self.backends:
            backend.close()
