"""``lbcore check``: every health check of a deployment, once, over real sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import click

from lbcore.cli._common import (
    DIFFERENCE,
    OK,
    emit_json,
    emit_table,
    file_argument,
    from_option,
    load,
    output_option,
)
from lbcore.health import AsyncioProber, Check, CheckedService, HTTPCheck, Probe
from lbcore.model import format_endpoint


@attrs.frozen
class Outcome:
    """One check of one real server: its probe, whether it passed, how long it took, and why."""

    service: str
    real_server: str
    probe: Probe
    ok: bool
    seconds: float
    detail: str


def check_name(check: Check) -> str:
    """A check as a column shows it: ``tcp``, ``http``, ``https``, ``dns``, ``exec`` ..."""
    if isinstance(check, HTTPCheck) and check.https:
        return "https"
    return type(check).__name__.removesuffix("Check").lower()


async def _attempt(prober: AsyncioProber, probe: Probe) -> tuple[bool, str]:
    """One attempt of ``probe``: (passed, detail), bounded by the check's timeout."""
    answer: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()

    def done(ok: bool, detail: str) -> None:
        if not answer.done():
            answer.set_result((ok, detail))

    prober.probe(probe, done)
    return await answer


async def _check(prober: AsyncioProber, probe: Probe) -> tuple[bool, float, str]:
    """One check as the monitor counts one: an attempt, and the policy's retries after a failed one
    (``delay_before_retry`` apart); (passed, seconds it took, detail of the last attempt)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    retries = probe.policy.retry
    for attempt in range(retries + 1):
        ok, detail = await _attempt(prober, probe)
        if ok or attempt == retries:
            break
        await asyncio.sleep(probe.policy.delay_before_retry)
    if attempt:
        detail += f" (attempt {attempt + 1} of {retries + 1})"
    return ok, loop.time() - started, detail


async def run_checks(services: list[CheckedService]) -> list[Outcome]:
    """Every real server's check of every service, once and all at the same time; a probe shared
    by two services (same check, same target) is asked once."""
    prober = AsyncioProber()
    targets = [(str(cs.key), rs.endpoint, cs.probe(rs)) for cs in services for rs in cs.service.real_servers]
    probes = list(dict.fromkeys(probe for _, _, probe in targets))
    try:
        answers = dict(zip(probes, await asyncio.gather(*(_check(prober, p) for p in probes))))
    finally:
        prober.close()
    return [Outcome(service, endpoint, probe, *answers[probe]) for service, endpoint, probe in targets]


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    """One result of ``check --output json`` (schema in docs/cli.md)."""
    p = outcome.probe
    return {"service": outcome.service, "real_server": outcome.real_server, "check": check_name(p.check),
            "target": format_endpoint(p.address, p.port) if p.port else str(p.address),
            "ok": outcome.ok, "seconds": round(outcome.seconds, 6), "detail": outcome.detail}


@click.command()
@file_argument()
@from_option
@output_option
def check(file: str, from_: str | None, output: str) -> int:
    """Run every health check of FILE once, and show the results.

    Each real server of each health-checked service gets its check once, as the monitor counts
    one (an attempt bounded by the check's timeout, and the policy's retries if it fails), all at
    the same time, from this host over real sockets; nothing is changed.

    Exit 0 when every check passes (or FILE has none), 1 when one fails, 2 on bad input.
    """
    loaded = load(file, from_)
    services = loaded.deployment.checked()
    outcomes = asyncio.run(run_checks(services)) if services else []
    failed = sum(not o.ok for o in outcomes)
    if output == "json":
        emit_json({"version": 1, "file": loaded.name, "passed": len(outcomes) - failed, "failed": failed,
                   "results": [outcome_json(o) for o in outcomes]})
    elif not outcomes:
        click.echo(f"lbcore: {loaded.name} has no health-checked service", err=True)
    else:
        rows = [[o.service, o.real_server, f"{r['check']} {r['target']}", "pass" if o.ok else "FAIL",
                 f"{o.seconds * 1000:.1f} ms", o.detail] for o, r in ((o, outcome_json(o)) for o in outcomes)]
        columns = ["service", "real server", "check", "result", "time", "detail"]
        if output == "table":
            emit_table(f"health checks: {loaded.name}", columns, rows,
                       caption=f"{len(outcomes) - failed} passed, {failed} failed")
        else:
            for row in [columns, *rows]:
                click.echo("\t".join(str(cell) for cell in row))
            click.echo(f"lbcore: {len(outcomes) - failed} passed, {failed} failed", err=True)
    return DIFFERENCE if failed else OK
