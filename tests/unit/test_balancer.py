"""Balancer: every change is checked against capabilities before the backend sees it, and against
the table before anything changes."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import ClassVar

import pytest

from lbcore import (
    Balancer,
    Capability,
    InvalidField,
    Op,
    RealServer,
    ServiceKey,
    ServiceNotFound,
    Table,
    Unsupported,
    VirtualClock,
    VirtualService,
    open_backend,
)
from lbcore.ops import DeleteService, apply_ops
from lbcore.registry import backend_names


class RecordingBackend:
    """A backend that holds a table and records what it was asked to apply."""

    name: ClassVar[str] = "recording"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability) - {Capability.SCHEDULER_MH}

    def __init__(self) -> None:
        self.table = Table()
        self.applied: list[list[Op]] = []

    def read(self, keys: Collection[ServiceKey] | None = None) -> Table:
        if keys is None:
            return self.table
        return Table({k: s for k, s in self.table.services.items() if k in keys})

    def apply(self, ops: Sequence[Op]) -> None:
        self.table = apply_ops(self.table, ops)  # all or none, as the SPI requires
        self.applied.append(list(ops))

    def close(self) -> None:
        pass


def web(scheduler: str = "rr") -> VirtualService:
    return VirtualService(protocol="tcp", address="192.0.2.1", port=80, scheduler=scheduler,
                          real_servers=[RealServer("198.51.100.1", 80)])


def test_a_missing_capability_is_refused_before_the_backend_sees_anything() -> None:
    backend = RecordingBackend()
    with pytest.raises(Unsupported) as error:
        Balancer(backend).add_service(web("mh"))
    assert error.value.backend == "recording" and error.value.capability is Capability.SCHEDULER_MH
    assert "scheduler-mh" in str(error.value)
    assert backend.applied == []


def test_a_precondition_failure_changes_nothing_and_check_alone_never_applies() -> None:
    backend = RecordingBackend()
    with pytest.raises(ServiceNotFound):
        Balancer(backend).delete_service(web())
    with pytest.raises(ServiceNotFound):
        Balancer(backend).check([DeleteService(web().key)])
    assert backend.applied == [] and backend.table == Table()


def test_apply_sends_one_batch_and_nothing_when_already_there() -> None:
    backend = RecordingBackend()
    lb = Balancer(backend)
    lb.apply([web()])
    lb.apply([web()])
    assert len(backend.applied) == 1 and len(backend.applied[0]) == 2


def test_desired_state_must_hold_virtual_services() -> None:
    with pytest.raises(InvalidField) as error:
        Balancer(RecordingBackend()).plan(["not a service"])  # type: ignore[list-item]
    assert error.value.value == "not a service"


def test_the_sim_is_the_default_backend_and_always_registered() -> None:
    assert Balancer().backend.name == "sim"
    assert "sim" in backend_names()


def test_an_unknown_backend_name_is_refused_naming_it() -> None:
    with pytest.raises(InvalidField) as error:
        open_backend("f5")
    assert error.value.value == "f5"


def test_virtual_clock_only_moves_forward() -> None:
    clock = VirtualClock(10)
    clock.advance(5)
    assert clock.now() == 15
    with pytest.raises(InvalidField):
        clock.advance(-1)
    with pytest.raises(InvalidField):
        clock.set(3)
