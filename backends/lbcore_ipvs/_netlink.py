"""A small generic netlink socket for IPVS: requests, dumps, and pipelined batches of changes.

pyroute2 encodes and decodes the messages; the socket is ours so that a batch can be sent whole
before its acknowledgements are read, and so that each request's errno is known exactly.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
from collections.abc import Iterator, Sequence
from typing import Any

from pyroute2.netlink import (
    GENL_ID_CTRL,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    ctrlmsg,
)

from lbcore.errors import BackendError
from lbcore_ipvs._codec import CMD_GET_INFO, CMD_NAMES, MUTATING, Attrs, encode, ipvs_msg

NETLINK_GENERIC = 16
CTRL_CMD_GETFAMILY = 3
SO_RCVBUFFORCE = 33
WINDOW = 256  # requests in flight at once: their acks must fit in the receive buffer
#: Seconds to wait for a reply. The kernel handles a request inside sendmsg() and continues a dump
#: inside recvmsg(), so whatever it will say is queued before the call that causes it returns: a
#: reply that is not there is never coming, however busy the machine. The bound turns the
#: kernel's silence into an error instead of a hang.
REPLY_TIMEOUT = 30.0


#: Test-only, for the SIGKILL harness (tests/kernel/test_ipvs_sigkill.py): with this variable set
#: to N, the process kills itself with SIGKILL right after its N-th netlink send, so a test can
#: stop an apply at every message. Read once, at import; unset, a send pays one truth test.
KILL_AT_SEND_ENV = "LBCORE_IPVS_KILL_AT_SEND"
_kill_at_send = int(os.environ.get(KILL_AT_SEND_ENV, "0") or 0)
_sends = 0  # netlink sends of this process, counted only while the variable is set


def _after_send() -> None:
    global _sends
    _sends += 1
    if _sends == _kill_at_send:
        os.kill(os.getpid(), signal.SIGKILL)


def sends() -> int:
    """The netlink sends of this process so far (counted only while LBCORE_IPVS_KILL_AT_SEND is set)."""
    return _sends


class NetlinkError(OSError):
    """A request the kernel refused; ``errno`` is the kernel's."""


class IPVSSocket:
    """Generic netlink to the IPVS family of the current network namespace.

    Args:
        timeout: seconds to wait for a reply before raising (see REPLY_TIMEOUT).

    Raises:
        NetlinkError: ENOENT when the kernel has no IPVS (ip_vs not loaded), EPERM without
            CAP_NET_ADMIN.
    """

    def __init__(self, timeout: float = REPLY_TIMEOUT) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((0, 0))
        self.timeout = timeout
        self.sock.settimeout(timeout)
        self.seq = 0
        self.mutations = 0  # mutating messages sent: a no-op apply must send none
        self.unanswered = 0  # changes the kernel carried out without an ack (see change())
        self.family = self._resolve_family()

    def close(self) -> None:
        self.sock.close()

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _send(self, msg: Any, msg_type: int, flags: int) -> int:
        seq = self._next_seq()
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = seq
        msg["header"]["pid"] = 0
        msg.encode()
        self.sock.send(msg.data)
        if _kill_at_send:
            _after_send()
        return seq

    def _resolve_family(self) -> int:
        msg = ctrlmsg()
        msg["cmd"] = CTRL_CMD_GETFAMILY
        msg["version"] = 1
        msg["attrs"] = [("CTRL_ATTR_FAMILY_NAME", "IPVS")]
        seq = self._send(msg, GENL_ID_CTRL, NLM_F_REQUEST)
        (reply,) = self._collect(seq, ctrlmsg, dump=False, waiting="CTRL_CMD_GETFAMILY IPVS")
        family: int = reply.get_attr("CTRL_ATTR_FAMILY_ID")
        return family

    def _send_ipvs(self, cmd: int, attrs: Attrs, flags: int) -> int:
        if cmd in MUTATING:
            self.mutations += 1
        seq = self._next_seq()
        self.sock.send(encode(cmd, attrs, self.family, flags, seq))
        if _kill_at_send:
            _after_send()
        return seq

    @staticmethod
    def _name(cmd: int, seq: int) -> str:
        return f"{CMD_NAMES.get(cmd, f'IPVS command {cmd}')} (sequence {seq})"

    def _frames(self, waiting: str) -> Iterator[tuple[int, int, bytes]]:
        """(type, sequence number, bytes) of each netlink message received, for as long as they come.

        Raises:
            BackendError: nothing came within the timeout while waiting for ``waiting``.
        """
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                raise BackendError("ipvs", f"the kernel did not answer {waiting} within {self.timeout:g} s",
                                   errno=errno.ETIMEDOUT) from None
            offset = 0
            while offset < len(data):
                length, kind, _, seq = struct.unpack_from("=IHHI", data, offset)
                yield kind, seq, data[offset:offset + length]
                offset += (length + 3) & ~3

    def _collect(self, seq: int, cls: Any, dump: bool, waiting: str) -> list[Any]:
        """Read the replies to request ``seq``: a dump up to DONE, else one reply or the ack."""
        replies: list[Any] = []
        for kind, rseq, chunk in self._frames(waiting):
            if rseq != seq:
                continue  # a late reply to an earlier request
            if kind == NLMSG_ERROR:
                code = _errno(chunk)
                if code:
                    raise NetlinkError(code, os.strerror(code))
                return replies
            if kind == NLMSG_DONE:
                return replies
            msg = cls(chunk)
            msg.decode()
            replies.append(msg)
            if not dump:
                return replies
        raise AssertionError("unreachable")

    def request(self, cmd: int, attrs: Attrs) -> list[Any]:
        """One request; returns its reply (GET) or nothing (a change, acknowledged)."""
        seq = self._send_ipvs(cmd, attrs, NLM_F_REQUEST | NLM_F_ACK)
        return self._collect(seq, ipvs_msg, dump=False, waiting=self._name(cmd, seq))

    def change(self, cmd: int, attrs: Attrs) -> bool:
        """A change the kernel may carry out without a word: True if it was acknowledged, False if not.

        netlink_rcv_skb() (net/netlink/af_netlink.c) sends no ack when a command's handler returns
        -EINTR, which it takes for "a dump has started". IPVS_CMD_DEL_DAEMON returns -EINTR when
        it stopped a sync thread that had not yet run: stop_sync_thread() (ip_vs_sync.c) returns
        kthread_stop()'s result, and kthread() (kernel/kthread.c) returns -EINTR without calling
        the thread's function if it is told to stop first. Waiting for that ack waits forever.
        So a fence follows the change: IPVS_CMD_GET_INFO, which always answers. The kernel handles
        each request inside sendmsg(), in order, so the change's ack, if any, comes before the
        fence's reply, and the fence's reply is there as soon as the second send returns.

        Raises:
            NetlinkError: the kernel refused the change.
        """
        seq = self._send_ipvs(cmd, attrs, NLM_F_REQUEST | NLM_F_ACK)
        fence = self._send_ipvs(CMD_GET_INFO, [], NLM_F_REQUEST)
        code: int | None = None
        for kind, rseq, chunk in self._frames(self._name(cmd, seq)):
            if rseq == seq and kind == NLMSG_ERROR:
                code = _errno(chunk)
            elif rseq == fence:
                break
        if code is None:
            self.unanswered += 1
            return False
        if code:
            raise NetlinkError(code, os.strerror(code))
        return True

    def dump(self, cmd: int, attrs: Attrs) -> list[Any]:
        """A dump request; returns every reply message."""
        seq = self._send_ipvs(cmd, attrs, NLM_F_REQUEST | NLM_F_DUMP)
        return self._collect(seq, ipvs_msg, dump=True, waiting=self._name(cmd, seq))

    def batch(self, requests: Sequence[tuple[int, Attrs]]) -> list[int]:
        """Send changes a window at a time, then read their acks: the errno of each (0: done).

        Every request is carried out by the kernel whatever happened to the others; the caller
        knows from the result which ones took effect.
        """
        results: list[int] = []
        for start in range(0, len(requests), WINDOW):
            window = requests[start:start + WINDOW]
            pending: dict[int, int] = {}  # sequence number: command
            for cmd, attrs in window:
                pending[self._send_ipvs(cmd, attrs, NLM_F_REQUEST | NLM_F_ACK)] = cmd
            seqs = list(pending)
            acks = self._acks(pending)
            results.extend(acks[seq] for seq in seqs)
        return results

    def _acks(self, pending: dict[int, int]) -> dict[int, int]:
        """The errno of each request of ``pending`` (sequence number: command), as its ack comes."""
        seq, cmd = next(iter(pending.items()))
        waiting = self._name(cmd, seq) + (f" and the {len(pending) - 1} requests after it" if len(pending) > 1 else "")
        acks: dict[int, int] = {}
        for kind, rseq, chunk in self._frames(waiting):
            if kind == NLMSG_ERROR and rseq in pending:
                acks[rseq] = _errno(chunk)
                del pending[rseq]
                if not pending:
                    break
        return acks


def _errno(chunk: bytes) -> int:
    """The errno of an NLMSG_ERROR (struct nlmsgerr starts with the negative errno); 0 is an ack."""
    (code,) = struct.unpack_from("=i", chunk, 16)
    return int(-code)
