"""The ``lbcore`` command: a thin shell over the public API and :mod:`lbcore.formats`.

Subcommands live one group to a module: ``deploy`` (validate, plan, diff, apply), ``show``
(status, conns), ``health`` (check), ``simulate``, ``convert`` (export, import), ``replay``. Exit codes are the
same in every command (docs/cli.md): 0 ok, 1 a difference or a failed check where that is the
answer, 2 bad input or a refused change, 70 an internal error (a bug: no traceback unless
``LBCORE_DEBUG=1``), 130 interrupted.

Nothing imports this package; ``python -m lbcore`` and the ``lbcore`` console script run :func:`main`.

.. versionchanged:: 0.4 a package on click (was one argparse module with ``replay``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from lbcore import __version__
from lbcore.cli import convert, deploy, health, replay, show, simulate
from lbcore.cli._common import INTERNAL, report_error


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="lbcore")
def cli() -> None:
    """Layer-4 load balancing with IPVS: one deployment file, planned, applied and shown.

    Every command that reads a deployment takes a YAML deployment file or an ipvsadm-save dump
    (FILE, or - for standard input), told apart by its content or named with --from.

    Exit codes: 0 ok; 1 a difference or a failed check (plan, diff, check); 2 bad input or a
    refused change; 70 an internal error.
    """


for _command in (deploy.validate, deploy.plan, deploy.diff, deploy.apply, show.status, show.conns,
                 health.check, simulate.simulate, convert.export, convert.import_, replay.replay):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the lbcore command line; return its exit status.

    No exception escapes: click's usage errors exit 2, an :class:`~lbcore.LBError` or ``OSError``
    is one line on standard error and exit 2, anything else is an internal error (exit 70), shown
    with its traceback only when ``LBCORE_DEBUG=1``.
    """
    try:
        result = cli.main(args=list(argv) if argv is not None else None, prog_name="lbcore",
                          standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("lbcore: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("lbcore: interrupted", err=True)
        return 130
    except BrokenPipeError:
        # The reader went away (lbcore status | head): stop quietly. stdout goes to /dev/null so
        # that the interpreter's last flush does not fail again (the Python docs' recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        code = report_error(exc)
        if code == INTERNAL and os.environ.get("LBCORE_DEBUG") == "1":
            raise
        return code
    return result if isinstance(result, int) else 0
