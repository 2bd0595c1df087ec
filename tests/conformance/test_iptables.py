"""The conformance suite on the iptables backend, in a throw-away namespace of the real kernel."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import pytest
from _harness.netns import Lab
from lbcore_iptables import IPTablesBackend

from lbcore.backend import Backend
from lbcore.errors import BackendError
from lbcore.testing.conformance import BackendConformance


@attrs.define
class Injected:
    fired: bool = False


class _FaultyRoutes:
    """The backend's rtnetlink socket, refusing its change number ``at`` (counted by ``step``)."""

    def __init__(self, ipr: Any, step: Callable[[], None]) -> None:
        self._ipr, self._step = ipr, step

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._ipr, name)
        if name not in ("route", "rule", "addr"):
            return real

        def change(command: str, **kwargs: Any) -> Any:
            if command in ("add", "del"):
                self._step()
            return real(command, **kwargs)

        return change


@contextmanager
def iptables_fault(backend: Backend, at: int) -> Iterator[Injected]:
    """Refuse the backend's step ``at``: a table commit (before it takes effect), or an rtnetlink
    change (a route, an ip rule, an address). Steps are counted in the order they come."""
    assert isinstance(backend, IPTablesBackend)
    injected = Injected()
    steps = 0

    def step() -> None:
        nonlocal steps
        steps += 1
        if steps - 1 == at and not injected.fired:
            injected.fired = True
            raise BackendError("iptables", f"a fault injected at step {at}")

    real_commit, real_ipr = backend._commit, backend._ipr

    def commit(name: str, *args: Any, **kwargs: Any) -> bool:
        from lbcore_iptables import _edit

        if _edit.touches(name, args[0], {k: new for k, (_, new) in args[1].items()}):
            step()
        return real_commit(name, *args, **kwargs)

    backend._commit = commit  # type: ignore[method-assign]
    backend._ipr = lambda: _FaultyRoutes(real_ipr(), step)  # type: ignore[method-assign]
    try:
        yield injected
    finally:
        del backend._commit
        del backend._ipr


@pytest.mark.netns
class TestIPTables(BackendConformance):
    property_examples = 15

    @pytest.fixture
    def backend(self) -> Iterator[IPTablesBackend]:
        with Lab("dir") as lab, lab.inside("dir"):
            opened = IPTablesBackend(legacy_beside_nft=True, weighted="random")
            try:
                yield opened
            finally:
                opened.close()

    @pytest.fixture
    def fault(self) -> Callable[[Backend, int], Any]:
        return iptables_fault
