"""lbcore status and conns, run as a user runs them: "Layer 4 Status" and "Layer 4 Current Connections"."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Run

# ipvsadm pads InActConn to 10 columns (%-10u): the real server lines end in spaces.
STATUS = "".join(f"{line}\n" for line in [
    "IP Virtual Server version 1.2.1 (size=4096)",
    "Prot LocalAddress:Port Scheduler Flags",
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    "TCP  192.168.2.202:8080 wlc persistent 3600",
    *(f"  -> 192.168.2.{rs}:8080           Route   1      0          0         " for rs in (210, 211, 212)),
])


def test_status_on_the_simulator_prints_ipvsadm_ln_of_the_file_applied(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("status", str(option_1a))
    assert done.returncode == 0, done.stderr
    assert done.stdout == STATUS


def test_status_stats_and_rate_print_ipvsadms_columns(lbcore: Run, option_1a: Path) -> None:
    stats = lbcore("status", str(option_1a), "--stats")
    rate = lbcore("status", str(option_1a), "--rate")
    assert (stats.returncode, rate.returncode) == (0, 0)
    assert stats.stdout.splitlines()[1].split() == ["Prot", "LocalAddress:Port", "Conns", "InPkts", "OutPkts",
                                                    "InBytes", "OutBytes"]
    assert rate.stdout.splitlines()[1].split() == ["Prot", "LocalAddress:Port", "CPS", "InPPS", "OutPPS",
                                                   "InBPS", "OutBPS"]
    assert stats.stdout.splitlines()[3].split() == ["TCP", "192.168.2.202:8080", "0", "0", "0", "0", "0"]


def test_status_stats_and_rate_together_is_a_usage_error(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("status", str(option_1a), "--stats", "--rate")
    assert done.returncode == 2 and "--stats and --rate" in done.stderr


def test_status_json_has_services_real_servers_counters_and_rates(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("status", str(option_1a), "--output", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["version"] == 1 and report["backend"] == "sim"
    assert report["timeouts"] == {"tcp": 900, "tcpfin": 120, "udp": 300}
    (service,) = report["services"]
    zero = dict.fromkeys(("conns", "inpkts", "outpkts", "inbytes", "outbytes", "cps", "inpps", "outpps", "inbps",
                          "outbps"), 0)
    assert {k: v for k, v in service.items() if k != "real_servers"} == {
        "key": "-t 192.168.2.202:8080", "protocol": "tcp", "address": "192.168.2.202", "port": 8080,
        "fwmark": None, "family": 4, "scheduler": "wlc", "flags": [],
        "persistence": {"timeout": 3600, "netmask": None, "engine": None}, "one_packet": False, "stats": zero}
    assert service["real_servers"][0] == {
        "address": "192.168.2.210", "port": 8080, "forward": "dr", "weight": 1, "u_threshold": 0,
        "l_threshold": 0, "active": 0, "inactive": 0, "persistent": 0, "stats": zero}
    assert [rs["address"] for rs in service["real_servers"]] == ["192.168.2.210", "192.168.2.211", "192.168.2.212"]


def test_status_as_a_table_is_titled_layer_4_status(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("status", str(option_1a), "--output", "table", COLUMNS="160")
    assert done.returncode == 0, done.stderr
    assert "Layer 4 Status" in done.stdout
    assert "192.168.2.211:8080" in done.stdout and "Route" in done.stdout


def test_status_on_the_simulator_without_a_file_says_why_it_needs_one(lbcore: Run) -> None:
    done = lbcore("status")
    assert done.returncode == 2
    assert done.stderr.startswith("lbcore: the sim backend keeps no state between runs: give FILE")


def test_status_on_a_kernel_without_ipvs_is_one_line_and_exit_2(lbcore: Run, option_1a: Path) -> None:
    # This machine's kernel has no IPVS (the kernel tests boot one): the backend cannot open.
    done = lbcore("status", str(option_1a), "--backend", "ipvs")
    assert done.returncode == 2
    assert done.stderr.startswith("lbcore: BackendUnavailable: ipvs: "), done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_conns_prints_ipvsadm_lnc(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("conns", str(option_1a))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("IPVS connection entries\n"
                           "pro expire state       source             virtual            destination\n")


def test_conns_json_and_table(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("conns", str(option_1a), "-o", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"version": 1, "backend": "sim", "connections": []}
    table = lbcore("conns", str(option_1a), "-o", "table", COLUMNS="160")
    assert table.returncode == 0 and "Layer 4 Current Connections" in table.stdout


def test_without_rich_a_table_is_tab_separated_text(lbcore: Run, option_1a: Path, tmp_path: Path) -> None:
    # pip install lbcore without the cli extra: rich is not there (a package that cannot be imported
    # stands in for it, ahead of the installed one on the path).
    shadow = tmp_path / "no-rich" / "rich"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('rich is not installed')\n")
    done = lbcore("status", str(option_1a), "-o", "table", PYTHONPATH=str(shadow.parent))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["Layer 4 Status", "service\treal server\tscheduler / forward\tweight\tActiveConn\tInActConn"]
    assert lines[2] == "-t 192.168.2.202:8080\t\twlc persistent 3600\t\t\t"
    assert lines[3] == "\t192.168.2.210:8080\tRoute\t1\t0\t0"
