"""SIGKILL at every step of an iptables-backend apply: the next process converges in one apply.

One apply of the representative change in ``_crash_child.py`` (services, firewall marks, Auto-NAT,
a redirect, policy routes, loopback VIPs; state A to B, then B to A) is killed

- at every step that changes the kernel: each libiptc commit's two setsockopt calls
  (``IPT_SO_SET_REPLACE``, then ``IPT_SO_SET_ADD_COUNTERS``) and each rtnetlink request that adds
  or deletes (``RTM_NEW*``/``RTM_DEL*``), counted by strace in a clean run and killed on entry by
  strace's ``inject=...:signal=KILL:when=N``: no hook in the backend;
- and at random instants of the apply (``LBCORE_CRASH_RANDOM`` of them, 20 by default; 100 for
  the long run).

After each, a fresh process applies the target state: the first apply succeeds, the second has
no op, ``read()`` gives the state back, and the kernel holds exactly what an apply that was never
killed leaves (``iptables-legacy-save`` without counters, ``ip rule``, ``ip route show table
all``, ``ip addr``), the operator's rules, routes, rule and address included. The operator's rule
counters are compared too, except after a kill between a commit's two setsockopt calls: the table
is replaced and its old counters are not added back yet. ``iptables-legacy-restore`` has the
same window (test_iptables_legacy_restore_has_the_same_counter_window measures it), since both
commit through libiptc and the kernel's legacy xtables interface takes the two in separate calls.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import _crash_child as child
import pytest
from _harness.netns import Lab
from lbcore_iptables import IPTablesBackend

from lbcore import Balancer

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
CHILD = str(Path(__file__).with_name("_crash_child.py"))
#: Random kills per run: 20 in CI; LBCORE_CRASH_RANDOM=100 for the long run by hand.
RANDOM_KILLS = int(os.environ.get("LBCORE_CRASH_RANDOM", "20"))
#: A chain an operator made with lbcore's prefix and a comment like a service's descriptor.
FOREIGN_CHAIN = "LBCORE-S-0123456789"
FOREIGN = [
    "-t nat -A PREROUTING -p tcp -m tcp --dport 2222 -m comment --comment operator -j ACCEPT -c 11 1100",
    "-t nat -A POSTROUTING -o lo -j ACCEPT -c 12 1200",
    f"-t nat -N {FOREIGN_CHAIN}",
    f"-t nat -A {FOREIGN_CHAIN} -c 13 1300 -j ACCEPT",
    "-t mangle -A PREROUTING -p udp -m udp --dport 5353 -j MARK --set-xmark 0x7/0xffffffff -c 14 1400",
    "-t filter -A INPUT -p tcp -m tcp --dport 2222 -j ACCEPT -c 15 1500",
]
FOREIGN_IP = [
    "route add 10.94.0.0/24 via 10.93.0.2 table 100",  # the operator's route in a table lbcore uses
    "route add default via 10.93.0.2 table 50",
    "rule add fwmark 7 table 50 pref 500",
    "addr add 10.95.0.1/32 dev lo",
]
TABLES = ("nat", "mangle", "filter")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "backends"), str(Path(CHILD).parent)])}


def _nsenter(lab: Lab) -> list[str]:
    # nsenter execs the program (no fork), so the pid it is started as is the child's own.
    return ["nsenter", f"--net=/run/netns/{lab.ns('dir')}"]


#: One shell in the namespace prints all that _snapshot compares, each part after a "== name" line.
SNAPSHOT = "; ".join([*(f"echo '== {t}'; iptables-legacy-save -c -t {t}" for t in TABLES),
                      "echo '== rule'; ip -4 rule", "echo '== route'; ip -4 route show table all",
                      "echo '== addr'; ip -4 -o addr"])


def _snapshot(lab: Lab) -> tuple[dict[str, list[str]], list[str]]:
    """Everything the kernel holds that lbcore writes or could touch, counters aside (IPv4 only:
    IPv6 link-local addresses come and go with duplicate address detection); and the operator's
    rules with their counters (iptables-legacy-save -c without lbcore's chains)."""
    text = subprocess.run([*_nsenter(lab), "sh", "-c", SNAPSHOT], capture_output=True, text=True, check=True).stdout
    held: dict[str, list[str]] = {}
    for part in text.split("== ")[1:]:
        name, *lines = part.splitlines()
        held[name] = [line for line in lines if not line.startswith("#")]
    counters = []
    for table in TABLES:
        for line in held[table]:
            chain = re.match(r"(?:\[\d+:\d+\] )?(?:-A |:)(\S+)", line)
            if chain and chain[1].startswith("LBCORE-") and chain[1] != FOREIGN_CHAIN:
                continue
            if "--comment lbcore -j LBCORE-" not in line:
                counters.append(line)
        held[table] = [_uncounted(line) for line in held[table]]
    for name in ("rule", "route", "addr"):
        held[name].sort()
    return held, counters


def _differences(held: dict[str, list[str]], clean: dict[str, list[str]]) -> str:
    return "; ".join(f"{k}: extra {sorted(set(held[k]) - set(clean[k]))}, "
                     f"missing {sorted(set(clean[k]) - set(held[k]))}"
                     for k in clean if sorted(held[k]) != sorted(clean[k]))


def _uncounted(line: str) -> str:
    return re.sub(r"^\[\d+:\d+\] | \[\d+:\d+\]$", "", line)


def _put_counters_back(lab: Lab, counters: list[str]) -> None:
    """Give the operator's rules their counters again, after a kill in a commit's window zeroed them."""
    wanted = {_uncounted(line): line for line in counters}
    for table in TABLES:
        saved = lab.run("dir", "iptables-legacy-save", "-c", "-t", table).splitlines()
        text = "".join(wanted.get(_uncounted(line), line) + "\n" for line in saved)
        lab.run("dir", "iptables-legacy-restore", "-c", "-T", table, stdin=text)


def _reset(lab: Lab, name: str) -> None:
    """Apply state ``name`` from this process (not under test here: the children are)."""
    with lab.inside("dir"):
        backend = IPTablesBackend(legacy_beside_nft=True, weighted="random")
        try:
            Balancer(backend).apply(child.states()[name])
        finally:
            backend.close()


class Children:
    """The fresh processes of the test, forked in the namespace by ``_crash_child.py serve``."""

    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.tmp = tmp
        self.lab = lab
        self.server = subprocess.Popen([*_nsenter(lab), sys.executable, CHILD], env=_env(), text=True,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _ask(self, line: str) -> str:
        assert self.server.stdin is not None and self.server.stdout is not None
        self.server.stdin.write(line + "\n")
        self.server.stdin.flush()
        answer = self.server.stdout.readline().strip()
        if not answer:
            raise RuntimeError(f"_crash_child.py serve ended at {line!r}")
        return answer

    def fork(self, mode: str, name: str) -> tuple[int, Path]:
        """A fresh process that will apply (or converge on) state ``name`` once let go; its pid, its output."""
        out = self.tmp / f"{mode}-{name}-{len(list(self.tmp.iterdir()))}.json"
        return int(self._ask(f"fork {mode} {name} {out}")), out

    def go(self, pid: int, kill_after: float | None = None) -> int:
        """Let ``pid`` run (and SIGKILL it ``kill_after`` seconds later), wait for its end; its exit
        code (negative: the signal that ended it)."""
        return int(self._ask(f"go {pid}{'' if kill_after is None else f' {kill_after:.6f}'}").split()[1])

    def traced(self, name: str, log: Path, inject: str | None = None) -> tuple[int, Path]:
        """Apply state ``name`` in a fresh process traced by strace (from its first step), killed by
        ``inject`` (strace's ``inject=`` expression), if given; its exit code and its output."""
        pid, out = self.fork("apply", name)
        # strace in the namespace too: it asks sock_diag what a socket is, to decode netlink messages.
        argv = [*_nsenter(self.lab), "strace", "-p", str(pid), "-o", str(log), "-e", "trace=setsockopt,sendto"]
        strace = subprocess.Popen([*argv, *(["-e", f"inject={inject}"] if inject else [])],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while _tracer(pid) == 0:  # not attached yet
            if time.monotonic() > deadline or strace.poll() is not None:
                raise RuntimeError(f"strace did not attach to {pid}")
            time.sleep(0.005)
        code = self.go(pid)
        strace.wait(timeout=60)
        return code, out

    def converge(self, name: str) -> dict[str, object]:
        pid, out = self.fork("converge", name)
        if self.go(pid) != 0:
            return {"error": "the converging process failed (its traceback is on stderr)"}
        result: dict[str, object] = json.loads(out.read_text())
        return result

    def close(self) -> None:
        assert self.server.stdin is not None
        self.server.stdin.close()
        self.server.wait(timeout=60)


def _tracer(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    return 0


def _kill_points(log: Path) -> list[tuple[str, int, str]]:
    """The steps of a traced apply that change the kernel: (syscall, its invocation number, what)."""
    points, seen = [], {"setsockopt": 0, "sendto": 0}
    for line in log.read_text().splitlines():
        call = line.split("(", 1)[0]
        if call not in seen:
            continue
        seen[call] += 1
        what = re.search(r"IPT_SO_SET_\w+|nlmsg_type=(RTM_(?:NEW|DEL)\w+)", line)
        if what:
            points.append((call, seen[call], what[1] or what[0]))
    return points


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab("dir", tools=("iptables-legacy", "iptables-legacy-save", "strace", "nsenter")) as lab:
        lab.batch("dir", [f"link add {child.LINK} type veth peer name {child.LINK}p",
                          f"addr add 10.93.0.1/24 dev {child.LINK}", f"link set {child.LINK} up",
                          f"link set {child.LINK}p up", *FOREIGN_IP])
        for rule in FOREIGN:
            lab.run("dir", "iptables-legacy", *rule.split())
        yield lab


def test_a_sigkill_at_any_step_of_an_apply_converges_in_one_apply(lab: Lab, tmp_path: Path) -> None:
    children = Children(lab, tmp_path)
    try:
        _kill_everywhere(lab, children, tmp_path)
    finally:
        children.close()


def _kill_everywhere(lab: Lab, children: Children, tmp_path: Path) -> None:
    counters = _snapshot(lab)[1]
    clean: dict[str, dict[str, list[str]]] = {}
    points: dict[str, list[tuple[str, int, str]]] = {}
    durations = []
    for source, target in (("B", "A"), ("A", "B")):  # B first: the lab starts empty
        _reset(lab, source)
        code, _ = children.traced(target, tmp_path / f"clean-{target}.log")
        assert code == 0
        points[target] = _kill_points(tmp_path / f"clean-{target}.log")
        _reset(lab, source)  # and once more without strace, to time the apply for the random kills
        pid, out = children.fork("apply", target)
        assert children.go(pid) == 0
        durations.append(float(out.read_text()))
        clean[target] = _snapshot(lab)[0]
    failures: list[str] = []
    lost_counters: list[str] = []

    def check(target: str, what: str, window: bool) -> None:
        result = children.converge(target)
        held, now = _snapshot(lab)
        if "error" in result or result["second"] or not result["read"]:
            failures.append(f"{what}: {result}")
        elif any(sorted(held[k]) != sorted(clean[target][k]) for k in held):  # the operator's order: below
            failures.append(f"{what}: not what a clean apply leaves: {_differences(held, clean[target])}")
        elif now != counters:
            if [_uncounted(c) for c in now] != [_uncounted(c) for c in counters]:
                failures.append(f"{what}: the operator's rules changed: {now}")
            elif not window:
                failures.append(f"{what}: the operator's counters changed: {sorted(set(now) - set(counters))}")
            lost_counters.append(what)
            _put_counters_back(lab, counters)

    kills = 0
    for source, target in (("A", "B"), ("B", "A")):
        for call, number, step in points[target]:
            _reset(lab, source)
            log = tmp_path / f"kill-{target}-{call}-{number}.log"
            code, _ = children.traced(target, log, inject=f"{call}:signal=KILL:when={number}")
            kills += code == -signal.SIGKILL
            what = f"{source}->{target} killed at {call} #{number} ({step})"
            if code != -signal.SIGKILL:
                failures.append(f"{what}: the process was not killed: it exited with {code}")
            check(target, what, window=step == "IPT_SO_SET_ADD_COUNTERS")
    at_points = len(failures)
    # Random instants: from "go" to a little past the apply's usual end (start-up is done by then).
    seed = int(os.environ.get("LBCORE_CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    random_kills = 0
    for i in range(RANDOM_KILLS):
        source, target = ("A", "B") if i % 2 == 0 else ("B", "A")
        _reset(lab, source)
        pid, out = children.fork("apply", target)
        # Up to a little past the apply's usual end: the median of the runs that ended before their kill.
        delay = rng.uniform(0, 1.1 * statistics.median(durations))
        code = children.go(pid, kill_after=delay)
        if code == 0:  # it ended before its kill
            durations.append(float(out.read_text()))
        random_kills += code == -signal.SIGKILL and not out.exists()
        # A random kill cannot tell whether it fell between a commit's two setsockopt calls.
        check(target, f"{source}->{target} killed {delay * 1000:.1f} ms after go (seed {seed})", window=True)
    per_target = ", ".join(f"to {t}: {len(p)}" for t, p in points.items())
    print(f"\nkill points: {sum(map(len, points.values()))} ({per_target}), killed {kills}; random instants: "
          f"{RANDOM_KILLS}, {random_kills} killed mid-apply (an apply takes {statistics.median(durations) * 1000:.0f} "
          f"ms); operator's counters lost (the commit's window): {len(lost_counters)}; failures: {at_points} at kill "
          f"points, {len(failures) - at_points} at random instants")
    assert not failures, "\n".join(failures)
    assert kills == sum(map(len, points.values()))
