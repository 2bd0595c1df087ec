"""lbcore export and import, run as a user runs them."""

from __future__ import annotations

from pathlib import Path

from conftest import Run


def test_export_to_ipvsadm_save_prints_the_dump_ipvsadm_would(lbcore: Run, tmp_path: Path) -> None:
    # Out of order, with ipvsadm's defaults left out: the export is ipvsadm-save's order and spelling.
    dump = tmp_path / "in.save"
    dump.write_text("ipvsadm -A -t 192.0.2.20:443 -s rr\n"
                    "ipvsadm -a -t 192.0.2.20:443 -r 198.51.100.2 -m\n"
                    "-A -t 192.0.2.10:80 -p\n"
                    "-a -t 192.0.2.10:80 -r 198.51.100.9:80 -w 3 -x 100 -y 50\n"
                    "-a -t 192.0.2.10:80 -r 198.51.100.1:80\n"
                    "--set 900 120 60\n")
    done = lbcore("export", str(dump), "--to", "ipvsadm-save")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("-A -t 192.0.2.10:80 -s wlc -p 360\n"
                           "-a -t 192.0.2.10:80 -r 198.51.100.1:80 -g -w 1\n"
                           "-a -t 192.0.2.10:80 -r 198.51.100.9:80 -g -w 3\n"
                           "-A -t 192.0.2.20:443 -s rr\n"
                           "-a -t 192.0.2.20:443 -r 198.51.100.2:443 -m -w 1\n")
    assert done.stderr == ("lbcore: ipvsadm-save holds services and real servers only; left out: "
                           "the thresholds of 1 real server, timeouts\n")


def test_export_to_keepalived_or_ldirectord_comes_in_a_later_release(lbcore: Run, option_1a: Path) -> None:
    for to, name in (("keepalived", "keepalived.conf"), ("ldirectord", "ldirectord.cf")):
        done = lbcore("export", str(option_1a), "--to", to)
        assert done.returncode == 2
        assert done.stderr == (f"lbcore: --to {to}: writing {name} comes in a later release "
                               "(today: ipvsadm-save, yaml)\n")


def test_export_needs_to(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("export", str(option_1a))
    assert done.returncode == 2 and "--to" in done.stderr
