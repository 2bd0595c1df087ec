"""The simulator against the kernel's recorded answers, and the replay command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lbcore.errors import ParseError, ServiceNotFound, Unsupported
from lbcore.formats.trace import parse_trace, replay
from lbcore.sim import SimBackend
from lbcore.sim.replay import SimReplayer
from lbcore.testing.traces import TraceSpec, random_trace

KERNEL_TRACES = Path(__file__).parent / "traces" / "kernel-6.1"
TRACES = sorted(KERNEL_TRACES.glob("*.trace"))


def replay_text(text: str, seed: int = 0, kernel: str = "6.1") -> list[str]:
    return replay(parse_trace(text), SimReplayer(SimBackend(seed=seed, kernel=kernel)))


def test_all_recorded_traces_are_here() -> None:
    assert len(TRACES) == 26


@pytest.mark.parametrize("trace", TRACES, ids=[t.stem for t in TRACES])
def test_simulator_replays_what_linux_6_1_answered(trace: Path) -> None:
    want = trace.with_suffix(".kernel").read_text().splitlines()
    assert replay_text(trace.read_text()) == want


@pytest.mark.parametrize("scheduler", ["rr", "wrr", "wlc", "sh", "mh", "lblcr", "twos"])
def test_a_churning_trace_replays_the_same_every_time(scheduler: str) -> None:
    text = random_trace(TraceSpec(scheduler=scheduler, persistence=2, sysctls=True, connections=300, seed=7))
    kernel = "6.2" if scheduler == "twos" else "6.1"
    first = replay_text(text, seed=3, kernel=kernel)
    assert first == replay_text(text, seed=3, kernel=kernel)
    assert len(first) == 300
    assert any(line.endswith(":80") for line in first)


def test_twos_depends_on_the_seed_and_only_on_it() -> None:
    text = random_trace(TraceSpec(scheduler="twos", connections=200, thresholds=False, seed=1))
    assert replay_text(text, seed=1, kernel="6.2") == replay_text(text, seed=1, kernel="6.2")
    assert replay_text(text, seed=1, kernel="6.2") != replay_text(text, seed=2, kernel="6.2")


def test_linux_6_1_has_no_twos_so_the_simulator_of_6_1_refuses_it() -> None:
    with pytest.raises(Unsupported) as error:
        replay_text("0 rules -A -t 10.0.0.1:80 -s twos\n")
    assert error.value.backend == "sim" and "twos" in str(error.value)


def test_persistence_expires_and_templates_are_reused_within_the_timeout() -> None:
    text = """
    0 rules -A -u 10.0.0.100:53 -s rr -p 2
    0 rules -a -u 10.0.0.100:53 -r 10.1.1.2:53 -m
    0 rules -a -u 10.0.0.100:53 -r 10.1.2.2:53 -m
    0 rules --set 0 0 5
    0.1 open a udp 10.0.1.1:1000 10.0.0.100:53
    0.2 open b udp 10.0.1.1:1001 10.0.0.100:53
    0.3 open c udp 10.0.1.2:1000 10.0.0.100:53
    4.0 open d udp 10.0.1.1:1002 10.0.0.100:53
    70.0 open e udp 10.0.1.1:1003 10.0.0.100:53
    """
    # rr picks the newest real server first; b reuses a's template. At 4 s the template's 2 s are
    # over, but it still controls a's UDP entry (5 s), so it lives on by 60 s and d reuses it.
    # By 70 s everything has expired: e is scheduled afresh (rr's cursor moved on: 10.1.2.2).
    assert replay_text(text) == [
        "a 10.1.2.2:53", "b 10.1.2.2:53", "c 10.1.1.2:53", "d 10.1.2.2:53", "e 10.1.2.2:53"
    ]


def test_a_bad_rules_line_raises_a_parse_error_naming_the_value() -> None:
    with pytest.raises(ParseError) as error:
        replay_text("0 rules -A -t 10.0.0.1:70000 -s rr\n")
    assert "70000" in str(error.value) and "line 1" in str(error.value)


def test_a_rules_line_on_a_missing_service_raises_service_not_found() -> None:
    with pytest.raises(ServiceNotFound):
        replay_text("0 rules -a -t 10.0.0.1:80 -r 10.1.1.2:80 -m\n")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lbcore", *args], capture_output=True, text=True, check=False)


def test_replay_command_prints_the_kernel_answers() -> None:
    trace = KERNEL_TRACES / "mh-dr.trace"
    done = run_cli("replay", str(trace))
    assert done.returncode == 0, done.stderr
    assert done.stdout == trace.with_suffix(".kernel").read_text()


def test_replay_command_then_prints_layer_4_status_and_current_connections(tmp_path: Path) -> None:
    trace = tmp_path / "one.trace"
    trace.write_text("0 rules -A -t 192.0.2.10:80 -s rr\n"
                     "0 rules -a -t 192.0.2.10:80 -r 198.51.100.11:80 -g -w 1\n"
                     "0.5 open 1 tcp 203.0.113.5:40001 192.0.2.10:80\n"
                     "2.5 close 1\n")
    done = run_cli("replay", "--status", "--connections", str(trace))
    assert done.returncode == 0, done.stderr
    # The estimator's snapshot at 2 s counted the handshake's SYN (60 bytes) and ACK (52).
    assert done.stdout.splitlines() == [
        "1 198.51.100.11:80",
        "IP Virtual Server version 1.2.1 (size=4096)",
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
        "  -> RemoteAddress:Port",
        "TCP  192.0.2.10:80                       1        2        0      112        0",
        "  -> 198.51.100.11:80                    1        2        0      112        0",
        "",
        "IP Virtual Server version 1.2.1 (size=4096)",
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
        "TCP  192.0.2.10:80 rr",
        "  -> 198.51.100.11:80             Route   1      0          1         ",
        "IPVS connection entries",
        "pro expire state       source             virtual            destination",
        "TCP 02:00  FIN_WAIT    203.0.113.5:40001  192.0.2.10:80      198.51.100.11:80",
    ]


def test_replay_command_exits_non_zero_with_the_typed_error_on_a_bad_rules_line(tmp_path: Path) -> None:
    trace = tmp_path / "bad.trace"
    trace.write_text("0 rules -A -t 10.0.0.1:80 -s rr\n0.1 rules -A -t 10.0.0.2:80 -s fastest\n")
    done = run_cli("replay", str(trace))
    assert done.returncode == 2
    assert done.stdout == ""
    assert "ParseError" in done.stderr and "'fastest'" in done.stderr and "line 2" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_lists_replay() -> None:
    done = run_cli("--help")
    assert done.returncode == 0 and "replay" in done.stdout
