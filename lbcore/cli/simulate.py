"""``lbcore simulate FILE``: a seeded workload against a deployment on the simulator, with failures.

A thin shell over :func:`lbcore.whatif.simulate`: it reads the deployment, builds a
:class:`~lbcore.whatif.Scenario` from the options, and prints the :class:`~lbcore.whatif.Result`
(``--output text``, ``table`` or ``json``), with a progress bar on standard error for long runs
on a terminal, and the load over time as a PNG with ``--plot`` (matplotlib: ``pip install
'lbcore[plot]'``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from lbcore.cli._common import Refused, from_option, load, output_option
from lbcore.whatif import Failure, Recovery, Result, Scenario, by_service, parse_time
from lbcore.whatif import simulate as run_scenario

#: A run of at least this many sessions (over every run of the scenario) shows a progress bar.
LONG_RUN = 20_000


# -- printing ---------------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:g} s"


def _summary(result: Result) -> str:
    s = result.scenario
    return (f"{result.sessions} sessions from {s.clients} clients over {s.duration:g} s "
            f"(rate {s.rate:g}/s, mean session {s.mean_session:g} s, seed {s.seed}): "
            f"{result.opened} opened, {result.refused} refused, {result.persistence_hits} persistence hits")


def _failure_lines(result: Result) -> list[str]:
    lines = []
    for f in result.failures:
        lines.append(f"{f.failure.address} fails at {f.failure.at:g} s: out of service at "
                     f"{_seconds(f.detected)}; {f.moved} sessions moved, {f.open_at_failure} open on it "
                     f"when it failed, {f.sent_to_failed} sent to it after it failed")
        lines.extend(f"  {service}: {how}" for service, how in f.handling.items())
    return lines


def render_text(result: Result) -> str:
    """The result as plain text: the summary, a table per service, failures, events, notes."""
    out = [_summary(result)]
    for service, loads in by_service(result.real_servers).items():
        width = max([len("real server")] + [len(r.endpoint) for r in loads])
        out += ["", service, f"  {'real server':<{width}}  {'sessions':>8}  {'share':>6}"]
        out += [f"  {r.endpoint:<{width}}  {r.sessions:>8}  {r.share:>6.1%}" for r in loads]
    if result.failures:
        out += ["", "Failures", *(f"  {line}" for line in _failure_lines(result))]
    if result.events:
        out += ["", "Events"]
        out += [f"  {e.time:8.2f} s  {e.kind:<12} {e.address or '':<16} {e.service or ''}".rstrip()
                for e in result.events]
    if result.notes:
        out += ["", "Notes", *(f"  {note}" for note in result.notes)]
    return "\n".join(out)


def _render_table(result: Result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(_summary(result), soft_wrap=True)
    for service, loads in by_service(result.real_servers).items():
        table = Table(title=service)
        for column in ("real server", "sessions", "share"):
            table.add_column(column, justify="left" if column == "real server" else "right")
        for r in loads:
            table.add_row(r.endpoint, str(r.sessions), f"{r.share:.1%}")
        console.print(table)
    if result.failures:
        table = Table(title="Failures")
        for column in ("real server", "fails at", "out at", "moved", "open then", "sent after"):
            table.add_column(column, no_wrap=True)
        for f in result.failures:
            table.add_row(str(f.failure.address), _seconds(f.failure.at), _seconds(f.detected), str(f.moved),
                          str(f.open_at_failure), str(f.sent_to_failed))
        console.print(table)
        for f in result.failures:
            for service, how in f.handling.items():
                console.print(f"{f.failure.address} in {service}: {how}", soft_wrap=True)
    if result.events:
        table = Table(title="Events")
        for column in ("time", "event", "address", "service"):
            table.add_column(column)
        for e in result.events:
            table.add_row(f"{e.time:.2f} s", e.kind, e.address or "", e.service or "")
        console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", soft_wrap=True)


# -- progress and plot --------------------------------------------------------------------------------


@contextmanager
def _progress(show: bool) -> Iterator[Callable[[int, int], None] | None]:
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("simulating", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def plot(result: Result, path: str, title: str) -> None:
    """Draw the load on every real server over time, failures marked, as a PNG at ``path``.

    Raises:
        Refused: matplotlib is not installed (``pip install 'lbcore[plot]'``), or the file
            cannot be written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed: the plot goes to a file
        import matplotlib.pyplot as plt
    except ImportError:
        raise Refused("--plot needs matplotlib: pip install 'lbcore[plot]'") from None
    services = list(dict.fromkeys(service for service, _ in result.load))
    fig, axes = plt.subplots(len(services), 1, sharex=True, squeeze=False,
                             figsize=(10, 2.2 + 2.6 * len(services)))
    for ax, service in zip(axes[:, 0], services):
        for (svc, endpoint), values in result.load.items():
            if svc == service:
                ax.plot(result.times, values, label=endpoint, linewidth=1.5)
        for f in result.failures:
            ax.axvline(f.failure.at, color="red", linestyle="--", linewidth=1)
            ax.annotate(f"{f.failure.address} fails", (f.failure.at, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(3, -12), textcoords="offset points", color="red", fontsize=8)
            if f.detected is not None and f.detected != f.failure.at:
                ax.axvline(f.detected, color="darkorange", linestyle=":", linewidth=1.2)
                ax.annotate("out of service", (f.detected, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(3, -24), textcoords="offset points", color="darkorange", fontsize=8)
        for r in result.scenario.recoveries:
            ax.axvline(r.at, color="green", linestyle="--", linewidth=1)
            ax.annotate(f"{r.address} recovers", (r.at, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(3, -12), textcoords="offset points", color="green", fontsize=8)
        ax.set_title(service, fontsize=10, loc="left")
        ax.set_ylabel("open sessions")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="real server")
    axes[-1, 0].set_xlabel("seconds")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png", dpi=100)
    except OSError as exc:
        raise Refused(f"{path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


# -- the command -----------------------------------------------------------------------------------


def _events(texts: Sequence[str], parse: Callable[[str, str], Any], option: str) -> list[Any]:
    return [parse(text, option) for text in texts]


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--clients", type=click.IntRange(min=1), default=100, show_default=True,
              help="how many client addresses open sessions")
@click.option("--network", default="198.18.0.0/15", show_default=True, help="where the IPv4 clients come from")
@click.option("--rate", type=float, default=10.0, show_default=True,
              help="new sessions per second, split evenly between the services")
@click.option("--session", default="30s", show_default=True, metavar="TIME", help="mean session length")
@click.option("--duration", default="60s", show_default=True, metavar="TIME",
              help="how long new sessions keep starting")
@click.option("--seed", type=int, default=0, show_default=True, help="the same seed gives the same run")
@click.option("--fail", "fail", multiple=True, metavar="ADDRESS@TIME",
              help="a real server fails (e.g. 192.168.2.211@30s); repeatable")
@click.option("--recover", multiple=True, metavar="ADDRESS@TIME", help="a failed real server comes back; repeatable")
@click.option("--service", default=None, metavar="SERVICE",
              help="send all traffic to this service (-t 192.168.2.202:8080, -f 1); default: every service")
@click.option("--kernel", default="6.1", show_default=True, help="the kernel release the simulator reproduces")
@click.option("--plot", "plot_file", default=None, type=click.Path(dir_okay=False), metavar="FILE.png",
              help="draw the load on every real server over time, failures marked (needs lbcore[plot])")
@from_option
@output_option
def simulate(file: str, clients: int, network: str, rate: float, session: str, duration: str, seed: int,
             fail: tuple[str, ...], recover: tuple[str, ...], service: str | None, kernel: str,
             plot_file: str | None, from_: str | None, output: str) -> None:
    """Play a seeded workload against FILE on the simulator, with real servers failing on cue.

    Prints the sessions each real server took (and its share of its service), persistence hits,
    what each failure did (when it was out of service, sessions moved, open on it, sent to it
    after it failed) and refused connections. A failed real server of a health-checked service
    is found down by its checks, with the service's policy, and quiesced, removed or drained as
    configured; in a service without checks it is removed when it fails. The same seed gives the
    same output.
    """
    # An LBError (a ConfigError lists every problem) goes to main(): one line per problem, exit 2.
    scenario = Scenario(
        clients=clients, network=network, rate=rate, mean_session=parse_time(session, "--session"),
        duration=parse_time(duration, "--duration"), seed=seed,
        failures=_events(fail, Failure.parse, "--fail"), recoveries=_events(recover, Recovery.parse, "--recover"),
        service=service)
    deployment = load(file, from_).deployment
    expected = scenario.rate * scenario.duration * (len(scenario.failures) + 1)
    with _progress(sys.stderr.isatty() and expected >= LONG_RUN) as progress:
        result = run_scenario(deployment, scenario, progress=progress, kernel=kernel)
    if plot_file is not None:
        name = "<stdin>" if file == "-" else os.path.basename(file)
        plot(result, plot_file, f"lbcore simulate {name}: open sessions per real server (seed {seed})")
    if output == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
    elif output == "table":
        _render_table(result)
    else:
        click.echo(render_text(result))
