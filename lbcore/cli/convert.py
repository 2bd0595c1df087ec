"""``lbcore export`` and ``lbcore import``: a deployment from one format to another."""

from __future__ import annotations

import click

from lbcore import Deployment
from lbcore.cli._common import FORMATS, LATER, OK, Refused, count, dump_yaml, file_argument, from_option, load
from lbcore.formats.ipvsadm import dump_save


def left_out(deployment: Deployment) -> list[str]:
    """What an ipvsadm-save dump cannot hold of ``deployment``, one phrase each."""
    thresholds = sum(rs.u_threshold > 0 or rs.l_threshold > 0
                     for s in deployment.virtual_services() for rs in s.real_servers)
    lost = [phrase for n, phrase in (
        (len(deployment.checked()), f"the health checks of {count(len(deployment.checked()), 'service')}"),
        (len(deployment.rules), count(len(deployment.rules), "rule")),
        (thresholds, f"the thresholds of {count(thresholds, 'real server')}")) if n]
    for part in ("timeouts", "sysctls", "floating_ips", "hosts", "ha", "daemon"):
        if getattr(deployment, part):
            lost.append(part.replace("_", " "))
    return lost


@click.command()
@file_argument()
@click.option("--to", "to", type=click.Choice(FORMATS), required=True, metavar="FORMAT",
              help=f"the format to write ({', '.join(FORMATS)}; keepalived and ldirectord: in a later release)")
@from_option
def export(file: str, to: str, from_: str | None) -> int:
    """Write the deployment in FILE in another format, on standard output.

    --to ipvsadm-save prints exactly what ipvsadm -Sn prints once the deployment is applied to a
    kernel (the services and real servers; what ipvsadm-save cannot hold is named on standard
    error). --to yaml prints the deployment file.
    """
    if to in LATER:
        raise Refused(f"--to {to}: writing {LATER[to]} comes in a later release (today: ipvsadm-save, yaml)")
    loaded = load(file, from_)
    if to == "yaml":
        click.echo(dump_yaml(loaded.deployment), nl=False)
        return OK
    click.echo(dump_save(loaded.deployment.virtual_services()), nl=False)
    lost = left_out(loaded.deployment)
    if lost:
        click.echo(f"lbcore: ipvsadm-save holds services and real servers only; left out: {', '.join(lost)}",
                   err=True)
    return OK


@click.command("import")
@file_argument()
@from_option
def import_(file: str, from_: str | None) -> int:
    """Read FILE (an ipvsadm-save dump, or any format lbcore reads) and write the deployment file
    (YAML) on standard output."""
    loaded = load(file, from_)
    click.echo(dump_yaml(loaded.deployment), nl=False)
    return OK
