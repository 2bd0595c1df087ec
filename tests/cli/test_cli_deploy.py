"""lbcore validate, plan, diff and apply, run as a user runs them (tests/cli/conftest.py)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

from conftest import Run, lbcore_env

ADD_OPTION_1A = [
    "-A -t 192.168.2.202:8080 -s wlc -p 3600",
    "-a -t 192.168.2.202:8080 -r 192.168.2.210:8080 -g -w 1",
    "-a -t 192.168.2.202:8080 -r 192.168.2.211:8080 -g -w 1",
    "-a -t 192.168.2.202:8080 -r 192.168.2.212:8080 -g -w 1",
]


# -- validate --------------------------------------------------------------------------------------


def test_validate_a_valid_dump_exits_0_and_names_the_backend(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("validate", str(option_1a))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{option_1a}: valid (ipvsadm-save) for backend sim: 1 service, 0 rules\n"


def test_validate_json_says_valid_with_no_problems(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("validate", str(option_1a), "--output", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"version": 1, "file": str(option_1a), "format": "ipvsadm-save",
                                       "backend": "sim", "valid": True, "services": 1, "rules": 0,
                                       "problems": []}


def test_validate_prints_every_capability_the_backend_lacks_and_exits_2(lbcore: Run, tmp_path: Path) -> None:
    # The sim's default profile is Linux 6.1, which has no twos: both services are refused.
    dump = tmp_path / "twos.save"
    dump.write_text("-A -t 192.0.2.10:80 -s twos\n-A -u 192.0.2.10:53 -s twos\n-A -t 192.0.2.11:80 -s rr\n")
    done = lbcore("validate", str(dump))
    assert done.returncode == 2
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout
    # In the file's order, each with its field path.
    assert lines[0].startswith(f"{dump}: services[0]: backend 'sim' does not support scheduler-twos")
    assert lines[1].startswith(f"{dump}: services[1]: backend 'sim' does not support scheduler-twos")
    assert lines[0].endswith("needed by add_service -t 192.0.2.10:80")
    assert lines[1].endswith("needed by add_service -u 192.0.2.10:53")
    assert done.stderr == f"{dump}: 2 problems\n"


def test_validate_a_malformed_dump_names_the_line_and_exits_2(lbcore: Run, tmp_path: Path) -> None:
    dump = tmp_path / "bad.save"
    dump.write_text("-A -t 192.0.2.10:80 -s rr\n-A -t 192.0.2.11:80 -s fastest\n")
    done = lbcore("validate", str(dump), "-o", "json")
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert report["valid"] is False and len(report["problems"]) == 1
    assert "line 2" in report["problems"][0]["message"] and "'fastest'" in report["problems"][0]["message"]


def test_a_missing_file_is_one_line_on_stderr_and_exit_2(lbcore: Run, tmp_path: Path) -> None:
    done = lbcore("validate", str(tmp_path / "nothere.yaml"))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"lbcore: {tmp_path / 'nothere.yaml'}: No such file or directory\n"


def test_keepalived_and_ldirectord_files_are_refused_by_name(lbcore: Run, tmp_path: Path) -> None:
    keepalived = tmp_path / "keepalived.conf"
    keepalived.write_text("virtual_server 192.0.2.10 80 {\n    lb_algo wlc\n    real_server 198.51.100.1 80 {\n"
                          "        weight 1\n    }\n}\n")
    ldirectord = tmp_path / "ldirectord.cf"
    ldirectord.write_text("checktimeout=3\nvirtual=192.0.2.10:80\n\treal=198.51.100.1:80 gate\n")
    for path, name in ((keepalived, "keepalived.conf"), (ldirectord, "ldirectord.cf")):
        done = lbcore("plan", str(path))
        assert done.returncode == 2
        assert f"is a {name}; reading {name} comes in a later release" in done.stderr


def test_a_file_of_no_known_format_asks_for_from(lbcore: Run, tmp_path: Path) -> None:
    odd = tmp_path / "odd.txt"
    odd.write_text("hello there\n")
    done = lbcore("validate", str(odd))
    assert done.returncode == 2
    assert "cannot tell its format" in done.stderr and "--from" in done.stderr


def test_a_file_that_is_not_utf8_is_refused(lbcore: Run, tmp_path: Path) -> None:
    binary = tmp_path / "blob"
    binary.write_bytes(b"\xff\xfe\x00-A")
    done = lbcore("plan", str(binary))
    assert done.returncode == 2 and "is not UTF-8 text" in done.stderr


# -- plan and diff ---------------------------------------------------------------------------------


def test_plan_prints_the_ops_in_ipvsadms_words_and_exits_1(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("plan", str(option_1a))
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == ADD_OPTION_1A
    assert done.stderr == "lbcore: 4 changes pending on backend sim\n"


def test_plan_reads_standard_input(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("plan", "-", "--output", "json", input=option_1a.read_text())
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["file"] == "<stdin>" and report["backend"] == "sim" and report["changes"] == 4
    assert report["ops"][0] == {"op": "add_service", "ipvsadm": ADD_OPTION_1A[0], "text": ADD_OPTION_1A[0]}
    assert [op["op"] for op in report["ops"]] == ["add_service"] + ["add_real_server"] * 3


def test_plan_of_an_empty_deployment_exits_0(lbcore: Run, tmp_path: Path) -> None:
    empty = tmp_path / "empty.save"
    empty.write_text("# ipvsadm-save of a director with no services\n")
    done = lbcore("plan", str(empty))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == f"lbcore: no changes: backend sim matches {empty}\n"


def test_plan_refuses_what_the_backend_cannot_express_before_anything(lbcore: Run, tmp_path: Path) -> None:
    dump = tmp_path / "twos.save"
    dump.write_text("-A -t 192.0.2.10:80 -s twos\n")
    done = lbcore("plan", str(dump))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("lbcore: Unsupported: backend 'sim' does not support scheduler-twos")


def test_plan_on_a_backend_that_is_not_there_is_one_line_and_exit_2(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("plan", str(option_1a), "--backend", "nosuch")
    assert done.returncode == 2
    assert done.stderr.startswith("lbcore: InvalidField: open_backend.name: 'nosuch' is not a backend")


def test_diff_shows_the_change_as_a_unified_diff_of_ipvsadm_save(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("diff", str(option_1a))
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        "--- backend sim (now)",
        f"+++ backend sim ({option_1a})",
        "@@ -0,0 +1,4 @@",
        *(f"+{line}" for line in ADD_OPTION_1A),
    ]


def test_diff_shows_timeouts_and_thresholds_the_dump_sets(lbcore: Run, tmp_path: Path) -> None:
    dump = tmp_path / "set.save"
    dump.write_text("-A -u 192.0.2.53:53 -s rr\n-a -u 192.0.2.53:53 -r 198.51.100.1:53 -m -w 2 -x 10 -y 5\n"
                    "--set 900 120 60\n")
    done = lbcore("diff", str(dump), "-o", "json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["changes"] is True
    assert "+-a -u 192.0.2.53:53 -r 198.51.100.1:53 -m -w 2 -x 10 -y 5\n" in report["diff"]
    assert "\n---set 900 120 300\n" in report["diff"] and "\n+--set 900 120 60\n" in report["diff"]


def test_diff_of_an_empty_deployment_prints_nothing_and_exits_0(lbcore: Run, tmp_path: Path) -> None:
    empty = tmp_path / "empty.save"
    empty.write_text("")
    done = lbcore("diff", str(empty))
    assert (done.returncode, done.stdout) == (0, "")


# -- apply -----------------------------------------------------------------------------------------


def test_apply_without_a_terminal_or_yes_refuses_with_exit_2(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("apply", str(option_1a))
    assert done.returncode == 2
    assert done.stdout.splitlines() == ADD_OPTION_1A  # the plan is shown first
    assert done.stderr == ("lbcore: standard input is not a terminal, so nothing can confirm 4 changes on "
                           "backend sim: pass --yes to apply them\n")


def test_apply_yes_applies_and_says_so(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("apply", str(option_1a), "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ADD_OPTION_1A
    assert done.stderr == "lbcore: applied 4 changes to backend sim\n"


def test_apply_json_reports_the_ops_and_that_they_were_applied(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("apply", str(option_1a), "--yes", "-o", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["applied"], report["dry_run"], len(report["ops"])) == (True, False, 4)


def test_apply_dry_run_checks_and_applies_nothing(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("apply", str(option_1a), "--dry-run", "-o", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["applied"], report["dry_run"], len(report["ops"])) == (False, True, 4)
    assert done.stderr == "lbcore: dry run: 4 changes checked, nothing applied\n"


def test_apply_refuses_an_unsupported_deployment_before_asking(lbcore: Run, tmp_path: Path) -> None:
    dump = tmp_path / "twos.save"
    dump.write_text("-A -t 192.0.2.10:80 -s twos\n")
    done = lbcore("apply", str(dump), "--yes")
    assert done.returncode == 2
    assert "Unsupported" in done.stderr and "applied" not in done.stderr


def run_on_a_terminal(lbcore_path: str, args: list[str], answer: bytes) -> tuple[int, str]:
    """Run lbcore with a pseudo-terminal as its standard input; answer its question; (status, what
    the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([lbcore_path, *args], stdin=slave, stdout=slave, stderr=slave, env=lbcore_env(),
                            close_fds=True)
    os.close(slave)
    seen = b""
    answered = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if not answered and b"[y/N]" in seen:
                os.write(master, answer)
                answered = True
        elif proc.poll() is not None:
            break
    status = proc.wait(timeout=60)
    os.close(master)
    return status, seen.decode(errors="replace")


def test_apply_on_a_terminal_asks_and_applies_on_yes(lbcore_path: str, option_1a: Path) -> None:
    status, shown = run_on_a_terminal(lbcore_path, ["apply", str(option_1a), "-o", "text"], b"y\n")
    assert status == 0, shown
    assert "Apply these 4 changes to backend sim? [y/N]" in shown
    assert "lbcore: applied 4 changes to backend sim" in shown


def test_apply_on_a_terminal_answered_no_applies_nothing_and_exits_2(lbcore_path: str, option_1a: Path) -> None:
    status, shown = run_on_a_terminal(lbcore_path, ["apply", str(option_1a), "-o", "text"], b"n\n")
    assert status == 2, shown
    assert "lbcore: nothing applied" in shown and "applied 4" not in shown
