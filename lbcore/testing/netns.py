"""Throw-away network namespaces for tests against the real netfilter of this machine's kernel.

A :class:`Lab` makes namespaces with a random prefix, joins them with veth pairs, runs commands
and peers in them, and lets the calling thread step into one (:meth:`Lab.inside`) to open a
backend or a socket there. Everything it made is deleted on exit; it never changes the host's own
namespace. A missing prerequisite (root, ``ip``, ``iptables-legacy``) raises
:class:`~lbcore.errors.BackendUnavailable`: in CI that is a failure, never a skip.

.. versionadded:: 0.2
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
from collections.abc import Iterator

from lbcore.errors import BackendUnavailable

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def require_tools(*tools: str) -> None:
    """Raise BackendUnavailable unless this process is root and has every tool."""
    if os.geteuid() != 0:
        raise BackendUnavailable("netns", "network namespace tests need root")
    missing = [t for t in ("ip", *tools) if shutil.which(t) is None]
    if missing:
        raise BackendUnavailable("netns", f"missing {', '.join(missing)}: apt-get install iproute2 iptables")


class Lab:
    """Namespaces named ``<prefix>-<name>``, removed on exit.

    Args:
        names: the namespaces to make, each with ``lo`` up.
    """

    def __init__(self, *names: str) -> None:
        require_tools("iptables-legacy", "iptables-legacy-save")
        self.prefix = f"lbt{secrets.token_hex(3)}"
        self.names = list(names)
        self._procs: list[subprocess.Popen[str]] = []

    def ns(self, name: str) -> str:
        """The real name of namespace ``name``."""
        return f"{self.prefix}-{name}"

    def up(self) -> None:
        for name in self.names:
            self._ip("netns", "add", self.ns(name))
            self.run(name, "ip", "link", "set", "lo", "up")

    def down(self) -> None:
        for proc in self._procs:
            proc.kill()
            proc.wait()
        for name in self.names:
            subprocess.run(["ip", "netns", "del", self.ns(name)], capture_output=True, check=False)

    def __enter__(self) -> Lab:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    def run(self, name: str, *argv: str, check: bool = True, stdin: str | None = None) -> str:
        """Run a command in namespace ``name``; return its output."""
        done = subprocess.run(["ip", "netns", "exec", self.ns(name), *argv], input=stdin, text=True,
                              capture_output=True, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {name}: {done.stderr.strip()}")
        return done.stdout

    def link(self, a: str, a_address: str, b: str, b_address: str) -> None:
        """Join namespaces ``a`` and ``b`` with a veth pair; addresses take a prefix, e.g. /24."""
        left, right = f"{self.prefix}{secrets.token_hex(2)}", f"{self.prefix}{secrets.token_hex(2)}"
        self._ip("link", "add", left, "netns", self.ns(a), "type", "veth", "peer", "name", right,
                 "netns", self.ns(b))
        for name, dev, address in ((a, left, a_address), (b, right, b_address)):
            self.run(name, "ip", "addr", "add", address, "dev", dev)
            self.run(name, "ip", "link", "set", dev, "up")

    def sysctl(self, name: str, key: str, value: str) -> None:
        """Set ``key`` (``net.ipv4.ip_forward``) in namespace ``name``; /proc/sys/net is per namespace."""
        self.run(name, "sh", "-c", f"echo {value} > /proc/sys/{key.replace('.', '/')}")

    def server(self, name: str, identity: str, port: int) -> None:
        """A real server in ``name`` answering TCP and UDP on ``port`` with ``identity``."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(name), sys.executable, "-m",
                                 "lbcore.testing._peers", "server", identity, str(port)],
                                stdout=subprocess.PIPE, text=True)
        self._procs.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the server {identity} in {name} did not start")

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
