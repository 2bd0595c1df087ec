"""Throw-away network namespaces for tests against a real kernel's netfilter and IPVS.

A :class:`Lab` makes namespaces with a random prefix, joins them with veth pairs, runs commands
and peers in them, and lets the calling thread step into one (:meth:`Lab.inside`) to open a
backend or a socket there. The caller's own namespace can be one end of a link (:data:`HERE`),
which is how :class:`~_harness.kernel_replay.Topology` puts the director where the test runs.
Everything it made is deleted on exit, and every sysctl it changed in the caller's namespace is
set back. A missing prerequisite (root, ``ip``, the tools asked for) raises
:class:`~lbcore.errors.BackendUnavailable`: in CI that is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from lbcore.errors import BackendUnavailable

CLONE_NEWNET = 0x40000000
#: The caller's own network namespace, as a namespace name for :meth:`Lab.link`, :meth:`Lab.run`
#: and :meth:`Lab.sysctl`.
HERE = None
#: The real servers and clients of a replay (a program, not a module: it runs by its path in
#: namespaces, with nothing of lbcore or the tests on its import path).
PEERS = str(Path(__file__).with_name("_peers.py"))
#: Tools every Lab needs; a Lab for iptables tests asks for iptables-legacy too.
IPTABLES_TOOLS = ("iptables-legacy", "iptables-legacy-save")
_libc = ctypes.CDLL(None, use_errno=True)
_L = TypeVar("_L", bound="Lab")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def require_tools(*tools: str) -> None:
    """Raise BackendUnavailable unless this process is root and has ``ip`` and every tool."""
    if os.geteuid() != 0:
        raise BackendUnavailable("netns", "network namespace tests need root")
    missing = [t for t in ("ip", *tools) if shutil.which(t) is None]
    if missing:
        raise BackendUnavailable("netns", f"missing {', '.join(missing)}: apt-get install iproute2 iptables")


class Lab:
    """Namespaces named ``<prefix>-<name>``, removed on exit.

    Args:
        names: the namespaces to make, each with ``lo`` up.
        tools: programs the tests will run, checked before anything is made.
    """

    def __init__(self, *names: str, tools: Sequence[str] = IPTABLES_TOOLS) -> None:
        require_tools(*tools)
        self.prefix = f"lbt{secrets.token_hex(3)}"
        self.names = list(names)
        self._procs: list[subprocess.Popen[str]] = []
        self._here_links: list[str] = []  # links made in the caller's namespace
        self._here_sysctls: list[tuple[str, str]] = []  # (key, value before), in the order changed

    def ns(self, name: str) -> str:
        """The real name of namespace ``name``."""
        return f"{self.prefix}-{name}"

    def up(self) -> None:
        """Make the namespaces, each with ``lo`` up."""
        # One ip process per step, not per namespace: each costs about 40 ms in user-mode Linux.
        self.batch(HERE, [f"netns add {self.ns(name)}" for name in self.names])
        for name in self.names:
            self.batch(name, ["link set lo up"])

    def down(self) -> None:
        """Stop the peers, delete the namespaces and links, set the caller's sysctls back."""
        for key, value in reversed(self._here_sysctls):
            _write_sysctl(key, value)
        self._here_sysctls.clear()
        for proc in self._procs:
            proc.kill()
            proc.wait()
        # Links of the caller's namespace first, each pair at once: a namespace goes away when the
        # kernel gets round to it, and a veth of a dying one may still route a subnet the next
        # lab uses. -force: carry on past what is already gone.
        commands = [f"link del {link}" for link in self._here_links]
        commands += [f"netns del {self.ns(name)}" for name in self.names]
        if commands:
            subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"{c}\n" for c in commands), text=True,
                           capture_output=True, check=False)
        self._here_links.clear()

    def __enter__(self: _L) -> _L:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    @staticmethod
    def _ip(*args: str, stdin: str | None = None) -> None:
        done = subprocess.run(["ip", *args], input=stdin, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def run(self, name: str | None, *argv: str, check: bool = True, stdin: str | None = None) -> str:
        """Run a command in namespace ``name`` (:data:`HERE`: the caller's); return its output."""
        where = argv if name is HERE else ("ip", "netns", "exec", self.ns(name), *argv)
        done = subprocess.run(where, input=stdin, text=True, capture_output=True, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {name or 'this namespace'}: {done.stderr.strip()}")
        return done.stdout

    def batch(self, name: str | None, commands: Sequence[str]) -> None:
        """Run ``ip`` commands (``addr add ...``, one a line) in namespace ``name``, in one ``ip -batch``."""
        if commands:
            where = () if name is HERE else ("-n", self.ns(name))
            self._ip(*where, "-batch", "-", stdin="".join(f"{c}\n" for c in commands))

    def here_link(self, device: str) -> None:
        """Delete link ``device`` of the caller's namespace on exit (made by a :meth:`batch`)."""
        self._here_links.append(device)

    def device(self) -> str:
        """A fresh link name of this lab (at most 15 characters, as the kernel wants)."""
        return f"{self.prefix}{secrets.token_hex(2)}"

    def link(self, a: str | None, a_address: str, b: str, b_address: str) -> tuple[str, str]:
        """Join namespaces ``a`` and ``b`` with a veth pair, both ends up; addresses take a prefix.

        ``a`` may be :data:`HERE`. Returns the two ends' names, ``a``'s first.
        """
        left, right = self.device(), self.device()
        where = () if a is HERE else ("netns", self.ns(a))
        self._ip("link", "add", left, *where, "type", "veth", "peer", "name", right, "netns", self.ns(b))
        if a is HERE:
            self._here_links.append(left)
        for name, dev, address in ((a, left, a_address), (b, right, b_address)):
            self.batch(name, [f"addr add {address} dev {dev}", f"link set {dev} up"])
        return left, right

    def dummy(self, name: str | None, address: str) -> str:
        """A dummy link holding ``address`` (with its prefix), up, in namespace ``name``; its name."""
        dev = self.device()
        self.batch(name, [f"link add {dev} type dummy"])
        if name is HERE:
            self._here_links.append(dev)
        self.batch(name, [f"addr add {address} dev {dev}", f"link set {dev} up"])
        return dev

    def sysctl(self, name: str | None, key: str, value: str) -> None:
        """Set ``key`` (``net.ipv4.ip_forward``) in namespace ``name``; /proc/sys/net is per namespace.

        In the caller's namespace (:data:`HERE`) the value before is set back on exit.
        """
        if name is HERE:
            self._here_sysctls.append((key, _write_sysctl(key, value)))
        else:
            self.run(name, "sh", "-c", f"echo {value} > /proc/sys/{key.replace('.', '/')}")

    def peer(self, name: str, *args: str) -> subprocess.Popen[str]:
        """Start ``_peers.py ARGS`` in namespace ``name``, talking over its stdin and stdout; killed on exit."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(name), sys.executable, "-I", PEERS, *args],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._procs.append(proc)
        return proc

    def server(self, name: str, identity: str, port: int) -> subprocess.Popen[str]:
        """A real server in ``name`` answering TCP and UDP on ``port`` with ``identity``, once it listens."""
        proc = self.peer(name, "server", identity, str(port))
        self.wait_ready(proc, f"the server {identity} in {name}")
        return proc

    @staticmethod
    def wait_ready(proc: subprocess.Popen[str], what: str) -> None:
        """Wait for a server peer's ``ready`` line.

        Raises:
            RuntimeError: it said something else or ended.
        """
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"{what} did not start: {line or 'it exited'}")

    @contextlib.contextmanager
    def inside(self, name: str) -> Iterator[None]:
        """Run the calling thread in namespace ``name`` for the ``with`` block."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.ns(name)}", os.O_RDONLY)
        try:
            _setns(target)
            yield
        finally:
            _setns(home)
            os.close(home)
            os.close(target)

    def ask(self, name: str, address: str, port: int, *, source: str | None = None,
            protocol: str = "tcp", timeout: float = 2.0) -> str | None:
        """Connect from namespace ``name`` and return the first line answered, or None."""
        kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
        with self.inside(name):
            sock = socket.socket(socket.AF_INET, kind)
        with sock:
            sock.settimeout(timeout)
            if source is not None:
                sock.bind((source, 0))
            try:
                if protocol == "tcp":
                    sock.connect((address, port))
                    data = sock.recv(256)
                else:
                    sock.sendto(b"?", (address, port))
                    data = sock.recv(256)
            except OSError:
                return None
            return data.decode().strip() or None

    def save(self, name: str, table: str) -> list[str]:
        """``iptables-legacy-save -t table`` in ``name``, without counters and comments lines."""
        text = self.run(name, "iptables-legacy-save", "-t", table)
        return [line.split(" [")[0] for line in text.splitlines() if line and not line.startswith("#")]


def _write_sysctl(key: str, value: str) -> str:
    """Write ``key`` in this thread's namespace; return the value it had."""
    path = f"/proc/sys/{key.replace('.', '/')}"
    with open(path, encoding="ascii") as f:
        before = f.read().strip()
    with open(path, "w", encoding="ascii") as f:
        f.write(value)
    return before
