"""The ``lbcore`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lbcore.errors import LBError


def _replay(args: argparse.Namespace) -> int:
    from lbcore.formats.trace import parse_trace, replay
    from lbcore.sim import SimBackend
    from lbcore.sim.replay import SimReplayer

    with open(args.trace, encoding="utf-8") as f:
        events = parse_trace(f.read(), args.trace)
    for line in replay(events, SimReplayer(SimBackend(seed=args.seed, kernel=args.kernel))):
        print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the lbcore command line; return its exit status."""
    parser = argparse.ArgumentParser(prog="lbcore", description="Layer-4 load balancing with IPVS, modelled.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("replay", help="replay a trace on the simulator, one line per open")
    p.add_argument("trace", help="the trace file (format: docs/traces.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random source (twos)")
    p.add_argument("--kernel", default="6.1", help="the kernel release to reproduce: 6.1 (default) or 6.2 (twos)")
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
