"""``lbcore replay``: a trace on the simulator, one line per open (docs/traces.md)."""

from __future__ import annotations

import click

from lbcore import InvalidField, Listings, open_backend
from lbcore.cli._common import OK, read_text
from lbcore.formats import listing
from lbcore.formats.trace import Replayable, parse_trace
from lbcore.formats.trace import replay as replay_events


@click.command()
@click.argument("trace", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the random source (twos)")
@click.option("--kernel", default="6.1", show_default=True,
              help="the kernel release to reproduce: 6.1 or 6.2 (twos)")
@click.option("--status", is_flag=True, help='then print "Layer 4 Status": ipvsadm -Ln --stats and ipvsadm -Ln')
@click.option("--connections", is_flag=True, help='then print "Layer 4 Current Connections": ipvsadm -Lnc')
def replay(trace: str, seed: int, kernel: str, status: bool, connections: bool) -> int:
    """Replay TRACE on the simulator: one line per open, the real server it reached or -.

    TRACE is a trace file (docs/traces.md), or - for standard input.
    """
    text, name = read_text(trace)
    events = parse_trace(text, name)
    backend = open_backend("sim", seed=seed, kernel=kernel)
    try:
        if not isinstance(backend, Replayable):  # only if an installed "sim" is not lbcore's own
            raise InvalidField("lbcore replay", "backend", backend.name, "cannot replay a trace by itself")
        for line in replay_events(events, backend.replayer()):
            click.echo(line)
        if status or connections:
            if not isinstance(backend, Listings):
                raise InvalidField("lbcore replay", "--status", backend.name, "has no ipvsadm listings")
            snapshot = backend.snapshot()
            if status:
                click.echo(listing.layer4_status(snapshot), nl=False)
            if connections:
                click.echo(listing.connections(snapshot), nl=False)
    finally:
        backend.close()
    return OK
