"""The ``lbcore`` command's help, as the command prints it: what the ``lbcore-cli`` directive shows.

Kept apart from the directive so that a test can compare it with the command without Sphinx.
"""

from __future__ import annotations

import click


def commands() -> list[tuple[str, click.Command]]:
    """(name, command) of every ``lbcore`` subcommand, sorted by name."""
    from lbcore.cli import cli

    return sorted(cli.commands.items())


def help_text(name: str | None = None) -> str:
    """``lbcore --help``, or ``lbcore NAME --help``, as the command prints it."""
    from lbcore.cli import cli

    # As the command prints it on any terminal wide enough: click wraps at max_content_width less 2.
    settings = {**cli.context_settings, "terminal_width": cli.context_settings["max_content_width"] - 2}
    root = click.Context(cli, info_name="lbcore", **settings)
    if name is None:
        return cli.get_help(root)
    command = cli.commands[name]
    return command.get_help(click.Context(command, info_name=name, parent=root))
