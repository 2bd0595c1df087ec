"""``lbcore validate``, ``plan``, ``diff`` and ``apply``: from a deployment file to a backend."""

from __future__ import annotations

import difflib
import functools
import sys
from typing import TYPE_CHECKING, Any

import click

from lbcore import (
    AddRealServer,
    AddRule,
    AddService,
    Backend,
    Balancer,
    DeleteRule,
    Deployment,
    EditRealServer,
    EditService,
    LBError,
    SetSysctls,
    SetTimeouts,
    Table,
    Unsupported,
    apply_op,
)
from lbcore import plan as plan_ops
from lbcore.backend import require
from lbcore.cli._common import (
    DIFFERENCE,
    OK,
    REFUSED,
    Loaded,
    Refused,
    backend_name,
    backend_option,
    count,
    emit_json,
    emit_table,
    file_argument,
    from_option,
    load,
    op_json,
    op_text,
    open_for,
    output_option,
    problems_of,
)
from lbcore.formats.ipvsadm import dump_save

if TYPE_CHECKING:
    from lbcore import Op


# -- validate --------------------------------------------------------------------------------------


def _services_table(deployment: Deployment) -> Table:
    """The services, rules, timeouts and sysctls, without the refusal of parts no backend carries
    (validate reports those itself, beside the rest)."""
    return Table(deployment.virtual_services(), timeouts=deployment.timeouts, sysctls=deployment.sysctls,
                 rules=deployment.rules or None)


def _path_of(deployment: Deployment, op: Op) -> str | None:
    """Where in the deployment (its file's field path) the part an op adds is."""
    services = deployment.virtual_services()
    keys = [s.key for s in services]
    if isinstance(op, (AddService, EditService)) and op.service.key in keys:
        return f"services[{keys.index(op.service.key)}]"
    if isinstance(op, (AddRealServer, EditRealServer)) and op.key in keys:
        i = keys.index(op.key)
        endpoints = [rs.key for rs in services[i].real_servers]
        j = endpoints.index(op.real_server.key) if op.real_server.key in endpoints else None
        return f"services[{i}]" if j is None else f"services[{i}].real_servers[{j}]"
    if isinstance(op, (AddRule, DeleteRule)):
        rules = [r.key for r in deployment.rules]
        return f"rules[{rules.index(op.rule.key)}]" if op.rule.key in rules else "rules"
    if isinstance(op, SetTimeouts):
        return "timeouts"
    if isinstance(op, SetSysctls):
        return "sysctls"
    return None


def capability_problems(deployment: Deployment, backend: Backend) -> list[tuple[str | None, Unsupported]]:
    """Every refusal of ``deployment`` by a backend, with the field path of what is refused: the
    parts no backend carries, then each part the backend lacks a capability for (the first missing
    capability of each)."""
    problems: list[tuple[str | None, Unsupported]] = [
        (str(p.capability).removeprefix("Deployment."), p) for p in deployment.unsupported()]
    for op in plan_ops(Table(), _services_table(deployment)):
        try:
            require(backend, op)
        except Unsupported as exc:
            problems.append((_path_of(deployment, op), exc))
    return problems


@click.command()
@file_argument()
@backend_option
@from_option
@output_option
def validate(file: str, backend: str | None, from_: str | None, output: str) -> int:
    """Check FILE: it parses, and the backend can carry out all of it.

    Every problem is printed, not just the first: each error in the file with its line, column and
    field path, then each part the backend cannot express (a capability it lacks, a part no
    backend carries yet). The backend is opened (the ipvs backend checks which schedulers this
    kernel has), and nothing is changed.

    Exit 0 when FILE is valid, 2 with the list of problems.
    """
    try:
        loaded = load(file, from_)
    except LBError as exc:
        return _report_problems(file, None, problems_of(exc, "<stdin>" if file == "-" else file), output)
    name = backend_name(loaded, backend)
    opened = open_for(loaded, name)
    try:
        refusals = capability_problems(loaded.deployment, opened)
    finally:
        opened.close()
    problems = [{"file": loaded.name, "line": None, "column": None, "path": path, "message": str(p)}
                for path, p in refusals]
    if problems:
        return _report_problems(loaded.name, name, problems, output)
    summary = {"version": 1, "file": loaded.name, "format": loaded.format, "backend": name, "valid": True,
               "services": len(loaded.deployment.services), "rules": len(loaded.deployment.rules),
               "problems": []}
    if output == "json":
        emit_json(summary)
    else:
        d = loaded.deployment
        click.echo(f"{loaded.name}: valid ({loaded.format}) for backend {name}: "
                   f"{count(len(d.services), 'service')}, {count(len(d.rules), 'rule')}")
    return OK


def _report_problems(name: str, backend: str | None, problems: list[dict[str, Any]], output: str) -> int:
    if output == "json":
        emit_json({"version": 1, "file": name, "backend": backend, "valid": False, "problems": problems})
    elif output == "table":
        emit_table(f"{name}: {count(len(problems), 'problem')}", ["line", "column", "path", "message"],
                   ([p["line"], p["column"], p["path"], p["message"]] for p in problems))
    else:
        for p in problems:
            where = ":".join(str(x) for x in (p["file"], p["line"], p["column"]) if x is not None)
            path = f" {p['path']}:" if p["path"] else ""
            click.echo(f"{where}:{path} {p['message']}")
        click.echo(f"{name}: {count(len(problems), 'problem')}", err=True)
    return REFUSED


# -- plan and apply ----------------------------------------------------------------------------------


def _planned(loaded: Loaded, balancer: Balancer) -> list[Op]:
    """The ops that make the backend hold the deployment, checked against its capabilities and
    state (Unsupported, ServiceExists, ... before anything changes)."""
    ops = balancer.plan(loaded.deployment.table())
    balancer.check(ops)
    return ops


def _show_ops(title: str, ops: list[Op], output: str) -> None:
    """The ops as a table (terminal) or one ipvsadm command a line (text); nothing for json, or
    when there is no op (the note on standard error says so)."""
    if output == "table" and ops:
        emit_table(title, ["#", "op", "command"], ([i, op.kind.value, op_text(op)] for i, op in enumerate(ops, 1)))
    elif output == "text":
        for op in ops:
            click.echo(op_text(op))


@click.command()
@file_argument()
@backend_option
@from_option
@output_option
def plan(file: str, backend: str | None, from_: str | None, output: str) -> int:
    """Show the ops that would make the backend match FILE; change nothing.

    One op a line, in ipvsadm's words (-A, -E, -D, -a, -e, -d, --set), and lbcore's for rules and
    sysctls (add_rule ..., set_sysctls ...). The ops are checked against the backend's
    capabilities and current state, as apply would check them.

    Exit 0 when the backend matches FILE, 1 when changes are pending (like terraform plan
    -detailed-exitcode and kubectl diff), 2 on bad input or a refusal.
    """
    loaded = load(file, from_)
    with Balancer(open_for(loaded, backend)) as lb:
        ops = _planned(loaded, lb)
        name = lb.backend.name
    if output == "json":
        emit_json({"version": 1, "file": loaded.name, "backend": name, "changes": len(ops),
                   "ops": [op_json(op) for op in ops]})
    else:
        _show_ops(f"plan: {loaded.name} on backend {name}", ops, output)
        click.echo(f"lbcore: {count(len(ops), 'change')} pending on backend {name}" if ops
                   else f"lbcore: no changes: backend {name} matches {loaded.name}", err=True)
    return DIFFERENCE if ops else OK


def state_text(table: Table, desired: Table) -> str:
    """A table in ipvsadm-save -n's words, for diff: services and real servers (with -x/-y
    thresholds), then --set timeouts and sysctls where ``desired`` sets them, and rules as
    ``# rule ...`` lines."""
    out = dump_save(table, thresholds=True)
    if desired.timeouts is not None and table.timeouts is not None:
        t = table.timeouts
        out += f"--set {t.tcp} {t.tcpfin} {t.udp}\n"
    if desired.sysctls is not None and table.sysctls is not None:
        out += "".join(f"# sysctl {name}={int(v) if isinstance(v, bool) else v}\n"
                       for name in type(table.sysctls).names() for v in [getattr(table.sysctls, name)])
    out += "".join(f"# rule {rule.text()}\n" for rule in sorted((table.rules or {}).values(), key=lambda r: r.text()))
    return out


@click.command()
@file_argument()
@backend_option
@from_option
@output_option
def diff(file: str, backend: str | None, from_: str | None, output: str) -> int:
    """Show what would change as a unified diff of the backend's state, before and after.

    Both sides are written as ipvsadm-save -n writes them (with -x/-y where a real server has
    thresholds), then --set (when FILE sets timeouts), sysctls and rules as comment lines: the
    same change plan shows as ops, seen as state.

    Exit 0 when the backend matches FILE, 1 when they differ, 2 on bad input or a refusal.
    """
    loaded = load(file, from_)
    desired = loaded.deployment.table()
    with Balancer(open_for(loaded, backend)) as lb:
        name = lb.backend.name
        current = lb.read()
        ops = plan_ops(current, desired)
        lb.check(ops)
    # Both sides are the same reading of the backend: before, and after the ops, as apply_op makes it.
    after = functools.reduce(apply_op, ops, current)
    lines = list(difflib.unified_diff(state_text(current, desired).splitlines(keepends=True),
                                      state_text(after, desired).splitlines(keepends=True),
                                      fromfile=f"backend {name} (now)", tofile=f"backend {name} ({loaded.name})"))
    if output == "json":
        emit_json({"version": 1, "file": loaded.name, "backend": name, "changes": bool(lines),
                   "diff": "".join(lines)})
    else:
        colours = {"+": "green", "-": "red", "@": "cyan"}
        for line in lines:
            if output == "table":
                click.echo(click.style(line.rstrip("\n"), fg=colours.get(line[:1])))
            else:
                click.echo(line, nl=False)
        if not lines:
            click.echo(f"lbcore: no changes: backend {name} matches {loaded.name}", err=True)
    return DIFFERENCE if lines else OK


@click.command()
@file_argument()
@backend_option
@from_option
@click.option("--dry-run", is_flag=True, help="show the plan and check it; apply nothing")
@click.option("--yes", "-y", is_flag=True, help="apply without asking (needed when not on a terminal)")
@output_option
def apply(file: str, backend: str | None, from_: str | None, dry_run: bool, yes: bool, output: str) -> int:
    """Make the backend match FILE: show the plan, then apply it all or nothing.

    The plan is checked against the backend's capabilities and state before anything changes,
    and the backend applies every op or none (a failure part-way is undone). Without --yes, apply
    asks on the terminal; with no terminal it refuses (exit 2) and says to pass --yes, as
    terraform apply does. The sim backend's state lives in this process only: lbcore status FILE
    applies FILE to a fresh simulator itself.

    Exit 0 when applied (or nothing to do, or --dry-run checked), 2 on bad input, a refusal or
    an apply not confirmed.
    """
    loaded = load(file, from_)
    with Balancer(open_for(loaded, backend)) as lb:
        name = lb.backend.name
        ops = _planned(loaded, lb)
        result: dict[str, Any] = {"version": 1, "file": loaded.name, "backend": name,
                                  "ops": [op_json(op) for op in ops], "dry_run": dry_run, "applied": False}
        _show_ops(f"apply: {loaded.name} on backend {name}", ops, output)
        if not ops:
            click.echo(f"lbcore: no changes: backend {name} matches {loaded.name}", err=True)
        elif dry_run:
            click.echo(f"lbcore: dry run: {count(len(ops), 'change')} checked, nothing applied", err=True)
        else:
            changes = count(len(ops), "change")
            if not yes:
                if not sys.stdin.isatty():
                    raise Refused(f"standard input is not a terminal, so nothing can confirm {changes} "
                                  f"on backend {name}: pass --yes to apply them")
                these = "this change" if len(ops) == 1 else f"these {changes}"
                if not click.confirm(f"Apply {these} to backend {name}?", err=True):
                    click.echo("lbcore: nothing applied", err=True)
                    if output == "json":
                        emit_json(result)
                    return REFUSED
            lb.execute(ops)
            result["applied"] = True
            click.echo(f"lbcore: applied {changes} to backend {name}", err=True)
    if output == "json":
        emit_json(result)
    return OK
