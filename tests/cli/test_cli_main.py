"""The lbcore command as a whole: help, version, replay, and what it does with any error."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, Run

from lbcore import __version__

COMMANDS = ["apply", "check", "conns", "diff", "export", "import", "plan", "replay", "simulate", "status", "validate"]


def test_help_lists_every_command(lbcore: Run) -> None:
    done = lbcore("--help")
    assert done.returncode == 0, done.stderr
    listed = [line.split()[0] for line in done.stdout.split("Commands:\n", 1)[1].splitlines()
              if line.startswith("  ") and not line.startswith("   ")]
    assert listed == COMMANDS


def test_every_command_has_help(lbcore: Run) -> None:
    for command in COMMANDS:
        done = lbcore(command, "--help")
        assert done.returncode == 0, (command, done.stderr)
        assert done.stdout.startswith(f"Usage: lbcore {command} "), command


def test_version(lbcore: Run) -> None:
    done = lbcore("--version")
    assert (done.returncode, done.stdout) == (0, f"lbcore, version {__version__}\n")


def test_an_unknown_command_or_option_is_a_usage_error_exit_2(lbcore: Run) -> None:
    assert lbcore("frobnicate").returncode == 2
    done = lbcore("plan", "--no-such-option", "x")
    assert done.returncode == 2 and "No such option" in done.stderr


def test_replay_prints_the_kernels_answers(lbcore: Run) -> None:
    trace = ROOT / "tests" / "traces" / "kernel-6.1" / "mh-dr.trace"
    done = lbcore("replay", str(trace))
    assert done.returncode == 0, done.stderr
    assert done.stdout == trace.with_suffix(".kernel").read_text()


def test_replay_reads_standard_input_and_a_bad_line_is_one_error(lbcore: Run) -> None:
    done = lbcore("replay", "-", input="0 rules -A -t 10.0.0.1:80 -s fastest\n")
    assert done.returncode == 2
    assert done.stderr.startswith("lbcore: ParseError: ") and "'fastest'" in done.stderr


def test_an_unexpected_exception_is_an_internal_error_exit_70_without_traceback(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # In-process: no input makes lbcore fail this way, which is the point; a command that does stands in.
    from lbcore.cli import cli, main

    @cli.command("explode")
    def explode() -> None:
        raise ZeroDivisionError("division by zero")

    try:
        assert main(["explode"]) == 70
        err = capsys.readouterr().err
        assert err.startswith("lbcore: internal error: ZeroDivisionError: division by zero\n")
        assert "LBCORE_DEBUG=1" in err and "Traceback" not in err
        monkeypatch.setenv("LBCORE_DEBUG", "1")
        with pytest.raises(ZeroDivisionError):
            main(["explode"])
    finally:
        del cli.commands["explode"]
