"""lbcore_iptables._entries: the bytes python-iptables builds, loaded into a real netfilter.

Each case is one rule three ways: built by python-iptables as the iptables CLI would, packed by
_entries, and the line iptables-legacy-save prints for it. The packed bytes must equal
python-iptables'; loaded through libiptc in a throw-away namespace, they must save as that line,
``iptables -C`` with that line's arguments must find them (libiptc compares the bytes it would
build), and the decoders must read back their comment, counters and target.

Speed: 10k entries of one shape (-p tcp -d VIP -m tcp --dport P -m comment -j DNAT RIP:8080),
CPython 3.11 on the development VM: python-iptables (Rule, create_match/create_target, set the
options, bytes(rule.rule)) 1.47 s; _entries 0.084 s (18x) parsing each address from a string,
0.039 s (38x) with IPv4Address/IPv4Network already parsed, as the backend has them from the model.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import iptc
import pytest
from lbcore_iptables import _entries as e

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
PROBE_PORT = 9999
# Where ipt_entry keeps iniface[0:16].
INIFACE = slice(16, 32)


def rule(*, protocol: str | None = None, src: str | None = None, dst: str | None = None,
         in_interface: str | None = None, out_interface: str | None = None,
         matches: tuple[tuple[str, dict[str, str]], ...] = (),
         target: tuple[str, dict[str, str]] = ("ACCEPT", {}), jump: str | None = None) -> bytes:
    """Build a rule with python-iptables as ``iptables`` would parse it; return ``bytes(rule.rule)``.

    ``jump`` names a user chain: create_target(chain) would look the chain up in this namespace's
    tables, so the rule gets a standard target renamed, which is what that lookup builds.
    """
    built = iptc.Rule()
    for field, value in [("protocol", protocol), ("src", src), ("dst", dst),
                         ("in_interface", in_interface), ("out_interface", out_interface)]:
        if value is not None:
            setattr(built, field, value)
    for name, params in matches:
        match = built.create_match(name)
        for param, value in params.items():
            match.set_parameter(param, value)
    name, params = target
    made = built.create_target(name)
    for param, value in params.items():
        made.set_parameter(param, value)
    if jump is not None:
        made.standard_target = jump
    built.final_check()
    return bytes(built.rule)


@dataclass(frozen=True)
class Case:
    desc: str
    table: str
    chain: str
    theirs: Callable[[], bytes]
    ours: Callable[[], bytes]
    save: str
    #: Byte ranges where python-iptables differs from the iptables CLI (and so from ours).
    ignore: tuple[slice, ...] = ()


A, N = IPv4Address, IPv4Network
CASES = [
    Case("tcp dnat with comment", "nat", "LBCORE-T",
         lambda: rule(protocol="tcp", src="192.0.2.0/24", dst="!198.51.100.7", in_interface="eth0",
                      matches=(("tcp", {"sport": "1000:2000", "dport": "80"}), ("comment", {"comment": "svc:web"})),
                      target=("DNAT", {"to-destination": "10.0.0.1:8080"})),
         lambda: e.entry([e.tcp(sport=(1000, 2000), dport=(80, 80)), e.comment("svc:web")],
                         e.dnat(A("10.0.0.1"), 8080), protocol=6, src=N("192.0.2.0/24"),
                         dst=N("198.51.100.7/32"), invert_dst=True, in_interface="eth0"),
         "-A LBCORE-T -s 192.0.2.0/24 ! -d 198.51.100.7/32 -i eth0 -p tcp -m tcp --sport 1000:2000 --dport 80 "
         "-m comment --comment \"svc:web\" -j DNAT --to-destination 10.0.0.1:8080"),
    Case("dnat without port, out interface", "nat", "LBCORE-T",
         lambda: rule(out_interface="eth1", target=("DNAT", {"to-destination": "10.0.0.1"})),
         lambda: e.entry([], e.dnat(A("10.0.0.1")), out_interface="eth1"),
         "-A LBCORE-T -o eth1 -j DNAT --to-destination 10.0.0.1"),
    Case("udp multiport, random, snat", "nat", "LBCORE-T",
         lambda: rule(protocol="udp", matches=(("multiport", {"dports": "53,5353,8053"}),
                                               ("statistic", {"mode": "random", "probability": "0.33333"})),
                      target=("SNAT", {"to-source": "10.0.0.2"})),
         lambda: e.entry([e.multiport([53, 5353, 8053]), e.statistic_random(0.33333)], e.snat(A("10.0.0.2")),
                         protocol=17),
         "-A LBCORE-T -p udp -m multiport --dports 53,5353,8053 -m statistic --mode random "
         "--probability 0.33332999982 -j SNAT --to-source 10.0.0.2"),
    Case("udp ports, nth, masquerade", "nat", "LBCORE-T",
         lambda: rule(protocol="udp", matches=(("udp", {"sport": "53", "dport": "1024:65535"}),
                                               ("statistic", {"mode": "nth", "every": "3", "packet": "1"})),
                      target=("MASQUERADE", {})),
         lambda: e.entry([e.udp(sport=(53, 53), dport=(1024, 65535)), e.statistic_nth(3, 1)], e.masquerade(),
                         protocol=17),
         "-A LBCORE-T -p udp -m udp --sport 53 --dport 1024:65535 -m statistic --mode nth --every 3 --packet 1 "
         "-j MASQUERADE"),
    Case("redirect to port", "nat", "LBCORE-T",
         lambda: rule(protocol="tcp", target=("REDIRECT", {"to-ports": "3128"})),
         lambda: e.entry([], e.redirect(3128), protocol=6),
         "-A LBCORE-T -p tcp -j REDIRECT --to-ports 3128"),
    Case("redirect, in interface prefix", "nat", "LBCORE-T",
         lambda: rule(protocol="tcp", in_interface="veth+", target=("REDIRECT", {})),
         lambda: e.entry([], e.redirect(), protocol=6, in_interface="veth+"),
         "-A LBCORE-T -i veth+ -p tcp -j REDIRECT",
         # python-iptables drops the '+' from the name (the mask makes it a prefix match all the
         # same); xtables_parse_interface() keeps it, and so do we: iptables -C finds our rule.
         ignore=(INIFACE,)),
    Case("recent set, jump", "nat", "LBCORE-T",
         lambda: rule(src="!203.0.113.0/24", matches=(("recent", {"set": "", "name": "lbcore_web", "rsource": "",
                                                                   "mask": "255.255.255.0"}),),
                      jump="LBCORE-U"),
         lambda: e.entry([e.recent("lbcore_web", set=True, mask=A("255.255.255.0"))], e.jump("LBCORE-U"),
                         src=N("203.0.113.0/24"), invert_src=True),
         "-A LBCORE-T ! -s 203.0.113.0/24 -m recent --set --name lbcore_web --mask 255.255.255.0 --rsource "
         "-j LBCORE-U"),
    Case("recent rcheck, return", "nat", "LBCORE-U",
         lambda: rule(matches=(("recent", {"rcheck": "", "seconds": "10", "hitcount": "2", "reap": "",
                                           "name": "a", "rdest": ""}),),
                      target=("RETURN", {})),
         lambda: e.entry([e.recent("a", rcheck=True, seconds=10, hitcount=2, reap=True, rsource=False)],
                         e.verdict("RETURN")),
         "-A LBCORE-U -m recent --rcheck --seconds 10 --reap --hitcount 2 --name a --mask 255.255.255.255 --rdest "
         "-j RETURN"),
    Case("mark match, set xmark", "mangle", "LBCORE-M",
         lambda: rule(matches=(("mark", {"mark": "0x1/0xff"}),), target=("MARK", {"set-xmark": "0x2/0xffffffff"})),
         lambda: e.entry([e.mark(1, 0xFF)], e.set_mark(2)),
         "-A LBCORE-M -m mark --mark 0x1/0xff -j MARK --set-xmark 0x2/0xffffffff"),
    Case("inverted mark, set mark with mask", "mangle", "LBCORE-M",
         lambda: rule(matches=(("mark", {"mark": "!0x10"}),), target=("MARK", {"set-xmark": "0x4000/0xc000"})),
         lambda: e.entry([e.mark(0x10, invert=True)], e.set_mark(0x4000, 0xC000)),
         "-A LBCORE-M -m mark ! --mark 0x10 -j MARK --set-xmark 0x4000/0xc000"),
    Case("output jumps to the user chain", "filter", "OUTPUT",  # iptables-save lists built-in chains first
         lambda: rule(jump="LBCORE-F"),
         lambda: e.entry([], e.jump("LBCORE-F")),
         "-A OUTPUT -j LBCORE-F"),
    Case("drop", "filter", "LBCORE-F",
         lambda: rule(protocol="tcp", matches=(("tcp", {"dport": "23"}),), target=("DROP", {})),
         lambda: e.entry([e.tcp(dport=(23, 23))], e.verdict("DROP"), protocol=6),
         "-A LBCORE-F -p tcp -m tcp --dport 23 -j DROP"),
    Case("nth drop: the second of every three probe datagrams", "filter", "LBCORE-F",
         lambda: rule(protocol="udp", matches=(("udp", {"dport": str(PROBE_PORT)}),
                                               ("statistic", {"mode": "nth", "every": "3", "packet": "1"})),
                      target=("DROP", {})),
         lambda: e.entry([e.udp(dport=(PROBE_PORT, PROBE_PORT)), e.statistic_nth(3, 1)], e.verdict("DROP"),
                         protocol=17),
         f"-A LBCORE-F -p udp -m udp --dport {PROBE_PORT} -m statistic --mode nth --every 3 --packet 1 -j DROP"),
    Case("udp accept with two comments: the probe datagram's rule", "filter", "LBCORE-F",
         lambda: rule(protocol="udp", matches=(("udp", {"dport": str(PROBE_PORT)}), ("comment", {"comment": "probe"}),
                                               ("comment", {"comment": "d"})),
                      target=("ACCEPT", {})),
         lambda: e.entry([e.udp(dport=(PROBE_PORT, PROBE_PORT)), e.comment("probe"), e.comment("d")],
                         e.verdict("ACCEPT"), protocol=17),
         f"-A LBCORE-F -p udp -m udp --dport {PROBE_PORT} -m comment --comment probe -m comment --comment d -j ACCEPT"),
]


def masked(raw: bytes, ignore: tuple[slice, ...]) -> bytes:
    buf = bytearray(raw)
    for part in ignore:
        buf[part] = bytes(len(buf[part]))
    return bytes(buf)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.desc)
def test_entry_bytes_equal_python_iptables(case: Case) -> None:
    assert masked(case.ours(), case.ignore) == masked(case.theirs(), case.ignore)


def test_random_threshold_rounds_as_lround() -> None:
    assert [e.random_threshold(p) for p in (0.0, 0.5, 0.33333, 1.0)] == [0, 0x40000000, 715820724, 0x80000000]
    assert e.random_threshold(0.5 / 0x80000000) == 1  # lround() takes a half away from zero


def test_statistic_random_from_a_threshold_equals_from_its_probability() -> None:
    assert e.statistic_random_threshold(e.random_threshold(0.25)) == e.statistic_random(0.25)


def test_decoders_read_an_entry_built_here() -> None:
    raw = e.entry([e.tcp(dport=(80, 80)), e.comment("x" * 255), e.comment("é")], e.dnat(A("10.0.0.1"), 80),
                  protocol=6)
    assert (e.comment_of(raw), e.comments_of(raw)) == ("x" * 255, "x" * 255 + "é")
    assert (e.counters_of(raw), e.target_name_of(raw)) == ((0, 0), "DNAT")
    drop = e.entry([], e.verdict("DROP"))
    assert (e.comment_of(drop), e.comments_of(drop), e.target_name_of(drop)) == (None, "", "DROP")


def _require(*commands: str) -> None:
    """Fail (not skip) the test when the machine cannot run it."""
    if os.geteuid() != 0:
        pytest.fail("netns tests need root (ip netns add, iptables)", pytrace=False)
    for command in commands:
        if shutil.which(command) is None:
            pytest.fail(f"{command} not found: install Debian's iproute2 and iptables packages", pytrace=False)


def _run(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        pytest.fail(f"{shlex.join(argv)} exited {done.returncode}: {done.stderr.strip()}", pytrace=False)
    return done.stdout


@pytest.fixture
def netns() -> Iterator[str]:
    """A new network namespace with lo up; deleted afterwards."""
    _require("ip", "iptables-legacy", "iptables-legacy-save")
    name = f"lbcore-test-{secrets.token_hex(4)}"
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        _run("ip", "netns", "delete", name)


def test_entries_load_save_and_read_back_through_libiptc(netns: str) -> None:
    tables: dict[str, dict[str, list[str]]] = {}
    for case in CASES:
        tables.setdefault(case.table, {}).setdefault(case.chain, []).append(case.ours().hex())
    tables["nat"].setdefault("LBCORE-U", [])  # jumped to; created before anything is appended
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "backends")])}
    child = [sys.executable, str(Path(__file__).with_name("_iptc_load.py"))]
    request = json.dumps({"tables": tables, "probe_port": PROBE_PORT, "probes": 4})
    done = subprocess.run(["ip", "netns", "exec", netns, *child], input=request, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    read = answer["tables"]

    for table in tables:
        saved = _run("ip", "netns", "exec", netns, "iptables-legacy-save", "-t", table).splitlines()
        assert [line for line in saved if line.startswith("-A ")] == [c.save for c in CASES if c.table == table]
    for case in CASES:
        check = ["-C", *shlex.split(case.save)[1:]]  # the CLI builds the same bytes, or -C finds nothing
        _run("ip", "netns", "exec", netns, "iptables-legacy", "-t", case.table, *check)

    rules = {(table, chain): iter(read[table][chain]) for table in tables for chain in tables[table]}
    got = [(case.desc, rule["comment"], rule["target"], rule["libiptc_target"])
           for case in CASES for rule in [next(rules[case.table, case.chain])]]
    assert got == [
        ("tcp dnat with comment", "svc:web", "DNAT", "DNAT"),
        ("dnat without port, out interface", None, "DNAT", "DNAT"),
        ("udp multiport, random, snat", None, "SNAT", "SNAT"),
        ("udp ports, nth, masquerade", None, "MASQUERADE", "MASQUERADE"),
        ("redirect to port", None, "REDIRECT", "REDIRECT"),
        ("redirect, in interface prefix", None, "REDIRECT", "REDIRECT"),
        ("recent set, jump", None, "", "LBCORE-U"),  # a jump holds an offset; libiptc names the chain
        ("recent rcheck, return", None, "RETURN", "RETURN"),
        ("mark match, set xmark", None, "MARK", "MARK"),
        ("inverted mark, set mark with mask", None, "MARK", "MARK"),
        ("output jumps to the user chain", None, "", "LBCORE-F"),
        ("drop", None, "DROP", "DROP"),
        ("nth drop: the second of every three probe datagrams", None, "DROP", "DROP"),
        ("udp accept with two comments: the probe datagram's rule", "probe", "ACCEPT", "ACCEPT"),
    ]
    # One datagram of 10 bytes, 38 with its IPv4 and UDP headers, went OUTPUT -> LBCORE-F -> ACCEPT.
    assert read["filter"]["LBCORE-F"][2]["comments"] == "probed"
    # Four datagrams of 10 bytes, 38 with their IPv4 and UDP headers, went OUTPUT -> LBCORE-F; the
    # nth rule dropped packet 1 (counting from 0) of every 3: --packet is not "the first one first".
    assert answer["received"] == ["datagram-0", "datagram-2", "datagram-3"]
    assert read["filter"]["OUTPUT"][0]["counters"] == [4, 4 * 38]
    assert [rule["counters"] for rule in read["filter"]["LBCORE-F"]] == [[0, 0], [1, 38], [3, 3 * 38]]
