"""``lbcore status`` and ``lbcore conns``: the guide's "Layer 4 Status" and "Layer 4 Current Connections"."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click

from lbcore import Balancer, Listings
from lbcore.cli._common import (
    OK,
    Loaded,
    Refused,
    backend_option,
    emit_json,
    emit_table,
    file_argument,
    from_option,
    load,
    open_for,
    output_option,
)
from lbcore.formats import listing
from lbcore.formats.ipvsadm import sorted_real_servers, sorted_services


def _owned_options(func: Any) -> Any:
    func = click.option("--fwmark", "fwmarks", type=click.IntRange(1, 2**32 - 1), multiple=True, metavar="MARK",
                        help="ipvs: also list the services of this firewall mark (repeatable)")(func)
    return click.option("--vip", "vips", multiple=True, metavar="ADDRESS",
                        help="ipvs: also list the services on this VIP (repeatable); without FILE, "
                             "only the VIPs and marks named are listed")(func)


def _snapshot(file: str | None, from_: str | None, backend: str | None, vips: tuple[str, ...],
              fwmarks: tuple[int, ...]) -> tuple[listing.Snapshot, str]:
    """The backend's snapshot; on the sim backend, of a fresh simulator with FILE applied."""
    loaded: Loaded | None = load(file, from_) if file is not None else None
    opened = open_for(loaded, backend, vips, fwmarks)
    with Balancer(opened) as lb:
        name = opened.name
        if not isinstance(opened, Listings):
            raise Refused(f"backend {name} has no ipvsadm listings (status and conns read a data plane: "
                          "sim or ipvs)")
        if name == "sim":  # the simulator holds nothing between two runs: FILE is its state
            if loaded is None:
                raise Refused("the sim backend keeps no state between runs: give FILE, which is applied "
                              "to a fresh simulator first (or --backend ipvs to read the kernel)")
            lb.apply(loaded.deployment.table())
        return opened.snapshot(), name


def _stats_json(stats: listing.Stats) -> dict[str, int]:
    names = ("conns", "inpkts", "outpkts", "inbytes", "outbytes", "cps", "inpps", "outpps", "inbps", "outbps")
    return dict(zip(names, (*stats.counters(), *stats.rates())))


def service_json(svc: listing.ServiceStats) -> dict[str, Any]:
    """One service of ``status --output json`` (schema in docs/cli.md)."""
    s = svc.service
    persistence = None
    if s.persistence is not None:
        p = s.persistence
        persistence = {"timeout": p.timeout, "netmask": None if p.netmask is None else str(p.netmask),
                       "engine": None if p.engine is None else p.engine.value}
    return {
        "key": s.key.ipvsadm,
        "protocol": None if s.protocol is None else s.protocol.value,
        "address": None if s.address is None else str(s.address),
        "port": s.port,
        "fwmark": s.fwmark or None,
        "family": s.family,
        "scheduler": s.scheduler.value,
        "flags": sorted(f.value for f in s.flags),
        "persistence": persistence,
        "one_packet": s.one_packet,
        "stats": _stats_json(svc.stats),
        "real_servers": [{
            "address": str(rs.real_server.address),
            "port": rs.real_server.port,
            "forward": rs.real_server.forward.value,
            "weight": rs.real_server.weight,
            "u_threshold": rs.real_server.u_threshold,
            "l_threshold": rs.real_server.l_threshold,
            "active": rs.active,
            "inactive": rs.inactive,
            "persistent": rs.persistent,
            "stats": _stats_json(rs.stats),
        } for rs in sorted_real_servers(svc.real_servers)],
    }


def connection_json(entry: listing.ConnectionEntry) -> dict[str, Any]:
    """One connection (or persistence template) of ``conns --output json``."""
    names = {6: "tcp", 17: "udp", 132: "sctp", 0: "ip"}
    return {
        "protocol": names.get(entry.protocol, str(entry.protocol)),
        "client": str(entry.client), "client_port": entry.client_port,
        "virtual": str(entry.virtual), "virtual_port": entry.virtual_port,
        "destination": str(entry.destination), "destination_port": entry.destination_port,
        "state": entry.state, "expires": entry.expires,
        "pe_name": entry.pe_name or None, "pe_data": entry.pe_data or None,
    }


def _listed(snapshot: listing.Snapshot) -> list[listing.ServiceStats]:
    by_key = {svc.service.key: svc for svc in snapshot.services}
    return [by_key[s.key] for s in sorted_services(svc.service for svc in snapshot.services)]


def _status_rows(snapshot: listing.Snapshot, stats: bool, rate: bool) -> Iterator[list[object]]:
    for svc in _listed(snapshot):
        s = svc.service
        if stats or rate:
            values = svc.stats.counters() if stats else svc.stats.rates()
            yield [s.key.ipvsadm, "", *values]
        else:
            extra = f" persistent {s.persistence.timeout}" if s.persistence is not None else ""
            yield [s.key.ipvsadm, "", f"{s.scheduler.value}{extra}", "", "", ""]
        for rs in sorted_real_servers(svc.real_servers):
            if stats or rate:
                yield ["", rs.real_server.endpoint, *(rs.stats.counters() if stats else rs.stats.rates())]
            else:
                yield ["", rs.real_server.endpoint, rs.real_server.forward.ipvsadm_name, rs.real_server.weight,
                       rs.active, rs.inactive]


@click.command()
@file_argument(required=False)
@backend_option
@from_option
@click.option("--stats", is_flag=True, help="counters: Conns, InPkts, OutPkts, InBytes, OutBytes (ipvsadm -Ln --stats)")
@click.option("--rate", is_flag=True, help="rates: CPS, InPPS, OutPPS, InBPS, OutBPS (ipvsadm -Ln --rate)")
@_owned_options
@output_option
def status(file: str | None, backend: str | None, from_: str | None, stats: bool, rate: bool,
           vips: tuple[str, ...], fwmarks: tuple[int, ...], output: str) -> int:
    """Show "Layer 4 Status": the services and real servers the backend holds (ipvsadm -Ln).

    On the sim backend, FILE is applied to a fresh simulator first (its state lives in one
    process). On ipvs, the kernel is read; FILE (optional) names the VIPs and marks to list, and
    nothing is applied. Text output is ipvsadm's own, character for character.
    """
    if stats and rate:
        raise click.UsageError("--stats and --rate are two listings: give one")
    snapshot, name = _snapshot(file, from_, backend, vips, fwmarks)
    if output == "json":
        t = snapshot.timeouts
        emit_json({"version": 1, "backend": name,
                   "timeouts": {"tcp": t.tcp, "tcpfin": t.tcpfin, "udp": t.udp},
                   "services": [service_json(svc) for svc in _listed(snapshot)]})
    elif output == "table":
        if stats:
            columns = ["service", "real server", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"]
        elif rate:
            columns = ["service", "real server", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"]
        else:
            columns = ["service", "real server", "scheduler / forward", "weight", "ActiveConn", "InActConn"]
        emit_table("Layer 4 Status", columns, _status_rows(snapshot, stats, rate), caption=f"backend {name}")
    else:
        click.echo(listing.status(snapshot, stats=stats, rate=rate), nl=False)
    return OK


@click.command()
@file_argument(required=False)
@backend_option
@from_option
@_owned_options
@output_option
def conns(file: str | None, backend: str | None, from_: str | None, vips: tuple[str, ...],
          fwmarks: tuple[int, ...], output: str) -> int:
    """Show "Layer 4 Current Connections": every connection and persistence template (ipvsadm -Lnc).

    FILE and the backend are read as by lbcore status (on the sim backend, a fresh simulator
    with FILE applied has no connections yet). The kernel lists its whole connection table.
    """
    snapshot, name = _snapshot(file, from_, backend, vips, fwmarks)
    if output == "json":
        emit_json({"version": 1, "backend": name, "connections": [connection_json(e) for e in snapshot.connections]})
    elif output == "table":
        rows = ([c["protocol"].upper(), f"{c['expires'] // 60:02d}:{c['expires'] % 60:02d}", c["state"],
                 f"{c['client']}:{c['client_port']}", f"{c['virtual']}:{c['virtual_port']}",
                 f"{c['destination']}:{c['destination_port']}"]
                for c in map(connection_json, snapshot.connections))
        emit_table("Layer 4 Current Connections", ["pro", "expire", "state", "source", "virtual", "destination"],
                   rows, caption=f"backend {name}")
    else:
        click.echo(listing.connections(snapshot), nl=False)
    return OK
