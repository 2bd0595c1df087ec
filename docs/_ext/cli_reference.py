"""The ``lbcore-cli`` directive: the command reference, read from the ``lbcore`` command itself.

It walks the click group of :mod:`lbcore.cli` at build time and prints each command's ``--help``,
so the reference cannot disagree with the command: a new option, command or help text shows up
in the next build, and there is no checked-in copy to keep true.
"""

from __future__ import annotations

from typing import Any

import click
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


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


class CLIReference(SphinxDirective):
    """``.. lbcore-cli::``: a section per subcommand, holding its ``--help``."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        out: list[nodes.Node] = [nodes.literal_block(text=help_text(), language="text")]
        for name, _ in commands():
            section = nodes.section(ids=[f"lbcore-{name}"], names=[f"lbcore {name}"])
            title = nodes.title()
            title += nodes.literal(text=f"lbcore {name}")
            section += title
            section += nodes.literal_block(text=help_text(name), language="text")
            self.state.document.note_implicit_target(section, section)
            out.append(section)
        return out


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("lbcore-cli", CLIReference)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
