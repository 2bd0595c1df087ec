"""The ``lbcore`` command.

On this branch ``simulate`` (a click command, :mod:`lbcore.cli.simulate`) is dispatched before the
argparse commands; the click group of the whole command takes it with ``cli.add_command``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lbcore import Backend, InvalidField, LBError, Listings, open_backend
from lbcore.formats import listing
from lbcore.formats.trace import Replayable, parse_trace, replay


def _replay(args: argparse.Namespace) -> int:
    with open(args.trace, encoding="utf-8") as f:
        events = parse_trace(f.read(), args.trace)
    backend = open_backend("sim", seed=args.seed, kernel=args.kernel)
    try:
        if not isinstance(backend, Replayable):  # only if an installed "sim" is not lbcore's own
            raise InvalidField("lbcore replay", "backend", backend.name, "cannot replay a trace by itself")
        for line in replay(events, backend.replayer()):
            print(line)
        for listing_asked, render in ((args.status, _status), (args.connections, _connections)):
            if listing_asked:
                print(render(backend), end="")
    finally:
        backend.close()
    return 0


def _status(backend: Backend) -> str:
    if not isinstance(backend, Listings):
        raise InvalidField("lbcore replay", "--status", backend.name, "has no ipvsadm listings")
    return listing.layer4_status(backend.snapshot())


def _connections(backend: Backend) -> str:
    if not isinstance(backend, Listings):
        raise InvalidField("lbcore replay", "--connections", backend.name, "has no ipvsadm listings")
    return backend.connections()


def _simulate(argv: list[str]) -> int:
    import click

    from lbcore.cli.simulate import simulate

    try:
        simulate.main(args=argv, prog_name="lbcore simulate", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the lbcore command line; return its exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["simulate"]:
        return _simulate(words[1:])
    parser = argparse.ArgumentParser(prog="lbcore", description="Layer-4 load balancing with IPVS, modelled.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("replay", help="replay a trace on the simulator, one line per open")
    p.add_argument("trace", help="the trace file (format: docs/traces.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random source (twos)")
    p.add_argument("--kernel", default="6.1", help="the kernel release to reproduce: 6.1 (default) or 6.2 (twos)")
    p.add_argument("--status", action="store_true",
                   help='then print "Layer 4 Status": ipvsadm -Ln --stats and ipvsadm -Ln')
    p.add_argument("--connections", action="store_true",
                   help='then print "Layer 4 Current Connections": ipvsadm -Lnc')
    p.set_defaults(run=_replay)
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
        return status
    except LBError as exc:
        print(f"lbcore: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"lbcore: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
