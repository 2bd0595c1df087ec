"""The simulator's side of a trace replay."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lbcore.balancer import Balancer
from lbcore.formats.trace import Close, Open

if TYPE_CHECKING:  # the backend makes replayers (SimBackend.replayer()): no import back at run time
    from lbcore.sim.backend import Connection, SimBackend


class SimReplayer:
    """Replays a trace on a :class:`SimBackend`: the clock jumps to each event's time."""

    def __init__(self, backend: SimBackend) -> None:
        self.backend = backend
        self.balancer: Balancer = Balancer(self.backend)  # as the Replayer protocol has it
        self._start = self.backend.clock.now()
        self._open: dict[str, Connection] = {}

    def wait_until(self, when: float) -> None:
        self.backend.run_until(max(self._start + when, self.backend.clock.now()))

    def open(self, event: Open) -> str | None:
        conn = self.backend.connect(
            event.client, event.vip, event.vport, protocol=event.protocol,
            client_port=event.client_port, mark=event.mark,
        )
        if conn is None:
            return None
        self._open[event.id] = conn
        return conn.endpoint

    def close(self, event: Close) -> None:
        conn = self._open.pop(event.id, None)
        if conn is not None:
            self.backend.disconnect(conn)
