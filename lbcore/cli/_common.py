"""What every ``lbcore`` subcommand shares: reading a deployment, opening its backend, printing.

- A deployment comes from FILE, or from standard input when FILE is ``-``. Its format is read from
  its content (a YAML mapping, or ipvsadm-save's ``-A``/``-a`` lines) unless ``--from`` names it;
  keepalived.conf and ldirectord.cf are recognised and refused by name, for now.
- ``--output`` is ``table`` (rich's tables; the default on a terminal), ``text`` (the default
  otherwise: ipvsadm's own text where there is one, so a script reads what ipvsadm prints) or
  ``json`` (one JSON document, schemas in docs/cli.md).
- Exit codes, the same in every command: :data:`OK`, :data:`DIFFERENCE`, :data:`REFUSED`,
  :data:`INTERNAL`. Errors are one line on standard error, never a traceback.

Nothing here imports rich, pyroute2 or the YAML loader at module level: ``lbcore --help`` stays quick.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import click

from lbcore import AddRule, Backend, ConfigError, DeleteRule, Deployment, LBError, SetSysctls, open_backend
from lbcore.formats import ipvsadm

if TYPE_CHECKING:
    from lbcore import Op

#: Success: valid, nothing to change, applied, every check passed.
OK = 0
#: The answer is "yes, there is a difference": changes pending (plan, diff), a failed check.
DIFFERENCE = 1
#: Bad input (a file that does not parse or validate, a bad option) or a refused change
#: (a capability the backend lacks, an apply not confirmed).
REFUSED = 2
#: lbcore itself failed (a bug): sysexits.h's EX_SOFTWARE.
INTERNAL = 70

#: The formats a deployment can be read from, as ``--from`` names them.
FORMATS = ("yaml", "ipvsadm-save", "keepalived", "ldirectord")
#: Formats recognised but not read yet.
LATER = {"keepalived": "keepalived.conf", "ldirectord": "ldirectord.cf"}

OUTPUTS = ("table", "text", "json")

F = TypeVar("F", bound=Callable[..., Any])


class Refused(click.ClickException):
    """A request the command refuses: one line on standard error, exit :data:`REFUSED`."""

    exit_code = REFUSED

    def show(self, file: Any = None) -> None:
        click.echo(f"lbcore: {self.format_message()}", err=True)


# -- options ---------------------------------------------------------------------------------------


def output_option(func: F) -> F:
    """``--output/-o table|text|json``; the command gets ``output``, already resolved."""

    def resolve(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
        if value is not None:
            return value
        return "table" if sys.stdout.isatty() else "text"

    return click.option(
        "--output", "-o", type=click.Choice(OUTPUTS), default=None, callback=resolve,
        help="table (rich; the default on a terminal), text (the default otherwise: ipvsadm's own "
             "text where there is one) or json (see the schemas in the documentation).")(func)


def from_option(func: F) -> F:
    """``--from FORMAT``: the format of FILE, when its content should not decide."""
    return click.option("--from", "from_", type=click.Choice(FORMATS), default=None, metavar="FORMAT",
                        help=f"the format of FILE ({', '.join(FORMATS)}); default: read from its content")(func)


def backend_option(func: F) -> F:
    """``--backend/-b NAME``: the backend to act on; the deployment's own by default."""
    return click.option("--backend", "-b", default=None, metavar="NAME",
                        help="the backend to act on: sim, ipvs, iptables, or several joined by + "
                             "(ipvs+iptables); default: the one the deployment names (sim if none)")(func)


def file_argument(required: bool = True) -> Callable[[F], F]:
    """FILE: a deployment file, or ``-`` for standard input."""
    return click.argument("file", required=required, type=click.Path(dir_okay=False, allow_dash=True))


# -- reading a deployment --------------------------------------------------------------------------


@attrs.frozen
class Loaded:
    """A deployment as read from a file, with the name and format it was read as."""

    deployment: Deployment
    name: str
    format: str


_KEEPALIVED = re.compile(r"^\s*(global_defs|vrrp_instance|vrrp_sync_group|virtual_server|virtual_server_group|"
                         r"static_ipaddress|static_routes|vrrp_script|real_server)\b[^\n]*\{", re.MULTILINE)
_LDIRECTORD = re.compile(r"^\s*(virtual|real|checktimeout|checkinterval|autoreload|logfile|quiescent)\s*=",
                         re.MULTILINE)
_YAML = re.compile(r"^(---|%YAML|\{|[A-Za-z_][\w-]*\s*:(\s|$))")


def detect(text: str) -> str | None:
    """The format of a deployment's text (one of :data:`FORMATS`), or None if none fits."""
    if _KEEPALIVED.search(text):
        return "keepalived"
    if _LDIRECTORD.search(text):
        return "ldirectord"
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if words[0].rpartition("/")[2] == "ipvsadm":
            words = words[1:]
        if words and words[0] in ("-A", "-a", "-E", "-e", "-D", "-d", "-C", "--set", "--add-service",
                                  "--add-server"):
            return "ipvsadm-save"
        return "yaml" if _YAML.match(raw) else None
    return "ipvsadm-save"  # nothing but comments: an empty ipvsadm-save dump (no services)


def read_text(file: str) -> tuple[str, str]:
    """(text, name) of FILE, or of standard input for ``-``.

    Raises:
        Refused: the file is not UTF-8 text.
        OSError: it cannot be read.
    """
    name = "<stdin>" if file == "-" else file
    try:
        if file == "-":
            return sys.stdin.buffer.read().decode("utf-8"), name
        with open(file, encoding="utf-8") as f:
            return f.read(), name
    except UnicodeDecodeError as exc:
        raise Refused(f"{name}: is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load(file: str, from_: str | None) -> Loaded:
    """Read the deployment in FILE (``-``: standard input), in the format named or detected.

    Raises:
        Refused: the format cannot be told, or is one lbcore does not read yet.
        LBError: the file does not parse (a ``ConfigError`` lists every problem, a ``ParseError``
            names the line), or describes a deployment the model refuses.
        OSError: the file cannot be read.
    """
    text, name = read_text(file)
    fmt = from_ or detect(text)
    if fmt is None:
        raise Refused(f"{name}: cannot tell its format (a YAML deployment, or ipvsadm-save's -A/-a "
                      "lines): name it with --from")
    if fmt in LATER:
        raise Refused(f"{name}: is a {LATER[fmt]}; reading {LATER[fmt]} comes in a later release "
                      "(today: a YAML deployment or an ipvsadm-save dump)")
    if fmt == "ipvsadm-save":
        return Loaded(Deployment.from_table(ipvsadm.parse_save(text)), name, fmt)
    return Loaded(_load_yaml(text, name), name, fmt)


def _load_yaml(text: str, name: str) -> Deployment:
    from lbcore.formats import yaml as deployment_file  # ruamel.yaml and cattrs: only when a file needs them

    return deployment_file.load(text, name)


def dump_yaml(deployment: Deployment) -> str:
    """The deployment file (YAML) of ``deployment``."""
    from lbcore.formats import yaml as deployment_file

    return deployment_file.dump(deployment)


# -- backends --------------------------------------------------------------------------------------


def backend_name(loaded: Loaded | None, backend: str | None) -> str:
    """The backend asked for: ``--backend``, else the deployment's, else ``sim``."""
    if backend:
        return backend
    return loaded.deployment.backend.name if loaded is not None else "sim"


def _owned(deployment: Deployment | None, options: dict[str, Any], vips: Iterable[str] = (),
           fwmarks: Iterable[int] = ()) -> dict[str, Any]:
    """The ipvs backend's options, owning the deployment's VIPs and marks unless they are given."""
    options = dict(options)
    services = deployment.virtual_services() if deployment is not None else []
    if "vips" not in options:
        options["vips"] = sorted({str(s.address) for s in services if s.address is not None} | set(vips))
    if "fwmarks" not in options:
        options["fwmarks"] = sorted({s.fwmark for s in services if s.fwmark} | set(fwmarks))
    return options


def open_for(loaded: Loaded | None, backend: str | None, vips: Iterable[str] = (),
             fwmarks: Iterable[int] = ()) -> Backend:
    """Open the backend the command acts on, with the deployment's options for it.

    The ``ipvs`` backend touches only the VIPs and marks it is given: the deployment's services',
    unless its options name them, plus ``vips`` and ``fwmarks``.

    Raises:
        BackendUnavailable: the backend cannot run here (package, privileges, kernel).
        InvalidField: no backend has that name, or it refuses an option.
    """
    name = backend_name(loaded, backend)
    deployment = loaded.deployment if loaded is not None else None
    options: dict[str, Any] = {}
    if deployment is not None and deployment.backend.name == name:
        options = dict(deployment.backend.options)
    parts = name.split("+")
    vips, fwmarks = list(vips), list(fwmarks)
    if name == "ipvs":
        options = _owned(deployment, options, vips, fwmarks)
    elif "ipvs" in parts:
        options["ipvs"] = _owned(deployment, dict(options.get("ipvs", {})), vips, fwmarks)
    return open_backend(name, **options)


# -- printing --------------------------------------------------------------------------------------


def count(n: int, word: str) -> str:
    """``1 service``, ``2 services``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def emit_json(value: object) -> None:
    """Print ``value`` as one JSON document (keys in the order given, two-space indents)."""
    click.echo(json.dumps(value, indent=2))


def emit_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]],
               caption: str | None = None) -> None:
    """Print a rich table (falls back to tab-separated text where rich is not installed)."""
    try:
        from rich.console import Console
        from rich.table import Table as RichTable
    except ImportError:
        click.echo(title)
        click.echo("\t".join(columns))
        for row in rows:
            click.echo("\t".join("" if cell is None else str(cell) for cell in row))
        return
    table = RichTable(title=title, caption=caption)
    for column in columns:
        table.add_column(column, overflow="fold")  # addresses whole, on as many lines as they need
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    Console().print(table)


def op_text(op: Op) -> str:
    """An op in ipvsadm's words (``-A -t 192.0.2.10:80 -s wlc``), or lbcore's for what ipvsadm has
    no command for (``add_rule mark 1 proto=tcp``, ``set_sysctls expire_nodest_conn=1 ...``)."""
    if isinstance(op, SetSysctls):
        values = attrs.asdict(op.sysctls)
        return "set_sysctls " + " ".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in values.items())
    if isinstance(op, (AddRule, DeleteRule)):
        return str(op)
    return ipvsadm.format_command(op)


def op_json(op: Op) -> dict[str, Any]:
    """An op for ``--output json``: its kind, the ipvsadm command (None for a rule or sysctls), text."""
    ipvsadm_words = None if isinstance(op, (SetSysctls, AddRule, DeleteRule)) else ipvsadm.format_command(op)
    return {"op": op.kind.value, "ipvsadm": ipvsadm_words, "text": op_text(op)}


# -- errors ----------------------------------------------------------------------------------------


def problems_of(exc: LBError, name: str) -> list[dict[str, Any]]:
    """The problems an error reports, each with file, line, column, path (None where unknown) and message."""
    if isinstance(exc, ConfigError):
        return [{"file": p.file, "line": p.line, "column": p.column, "path": p.path or None, "message": p.message}
                for p in exc.problems]
    return [{"file": name, "line": None, "column": None, "path": None, "message": f"{type(exc).__name__}: {exc}"}]


def report_error(exc: BaseException) -> int:
    """Print ``exc`` as one line (or one per problem) on standard error; the exit code it means."""
    if isinstance(exc, ConfigError):  # one line per problem, as a compiler lists them
        for problem in exc.problems:
            click.echo(f"lbcore: {problem}", err=True)
        return REFUSED
    if isinstance(exc, LBError):
        click.echo(f"lbcore: {type(exc).__name__}: {exc}", err=True)
        return REFUSED
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""  # as cat(1) says it: the file, then why
        click.echo(f"lbcore: {where}{exc.strerror or exc}", err=True)
        return REFUSED
    click.echo(f"lbcore: internal error: {type(exc).__name__}: {exc}\n"
               "lbcore: this is a bug in lbcore; run again with LBCORE_DEBUG=1 for the traceback, "
               "and report it with that traceback", err=True)
    return INTERNAL
