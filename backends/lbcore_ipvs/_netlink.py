"""A small generic netlink socket for IPVS: requests, dumps, and pipelined batches of changes.

pyroute2 encodes and decodes the messages; the socket is ours so that a batch can be sent whole
before its acknowledgements are read, and so that each request's errno is known exactly.
"""

from __future__ import annotations

import os
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

from lbcore_ipvs._codec import MUTATING, Attrs, encode, ipvs_msg

NETLINK_GENERIC = 16
CTRL_CMD_GETFAMILY = 3
SO_RCVBUFFORCE = 33
WINDOW = 256  # requests in flight at once: their acks must fit in the receive buffer


class NetlinkError(OSError):
    """A request the kernel refused; ``errno`` is the kernel's."""


class IPVSSocket:
    """Generic netlink to the IPVS family of the current network namespace.

    Raises:
        NetlinkError: ENOENT when the kernel has no IPVS (ip_vs not loaded), EPERM without
            CAP_NET_ADMIN.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((0, 0))
        self.seq = 0
        self.mutations = 0  # mutating messages sent: a no-op apply must send none
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
        return seq

    def _resolve_family(self) -> int:
        msg = ctrlmsg()
        msg["cmd"] = CTRL_CMD_GETFAMILY
        msg["version"] = 1
        msg["attrs"] = [("CTRL_ATTR_FAMILY_NAME", "IPVS")]
        seq = self._send(msg, GENL_ID_CTRL, NLM_F_REQUEST)
        (reply,) = self._collect(seq, ctrlmsg, dump=False)
        family: int = reply.get_attr("CTRL_ATTR_FAMILY_ID")
        return family

    def _send_ipvs(self, cmd: int, attrs: Attrs, flags: int) -> int:
        seq = self._next_seq()
        self.sock.send(encode(cmd, attrs, self.family, flags, seq))
        return seq

    def _frames(self) -> Iterator[tuple[int, int, bytes]]:
        """(type, sequence number, bytes) of each netlink message received, forever."""
        while True:
            data = self.sock.recv(1 << 20)
            offset = 0
            while offset < len(data):
                length, kind, _, seq = struct.unpack_from("=IHHI", data, offset)
                yield kind, seq, data[offset:offset + length]
                offset += (length + 3) & ~3

    def _collect(self, seq: int, cls: Any, dump: bool) -> list[Any]:
        """Read the replies to request ``seq``: a dump up to DONE, else one reply or the ack."""
        replies: list[Any] = []
        for kind, rseq, chunk in self._frames():
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
        if cmd in MUTATING:
            self.mutations += 1
        seq = self._send_ipvs(cmd, attrs, NLM_F_REQUEST | NLM_F_ACK)
        return self._collect(seq, ipvs_msg, dump=False)

    def dump(self, cmd: int, attrs: Attrs) -> list[Any]:
        """A dump request; returns every reply message."""
        seq = self._send_ipvs(cmd, attrs, NLM_F_REQUEST | NLM_F_DUMP)
        return self._collect(seq, ipvs_msg, dump=True)

    def batch(self, requests: Sequence[tuple[int, Attrs]]) -> list[int]:
        """Send changes a window at a time, then read their acks: the errno of each (0: done).

        Every request is carried out by the kernel whatever happened to the others; the caller
        knows from the result which ones took effect.
        """
        results: list[int] = []
        for start in range(0, len(requests), WINDOW):
            window = requests[start:start + WINDOW]
            seqs = []
            for cmd, attrs in window:
                if cmd in MUTATING:
                    self.mutations += 1
                seqs.append(self._send_ipvs(cmd, attrs, NLM_F_REQUEST | NLM_F_ACK))
            acks = self._acks(set(seqs))
            results.extend(acks[seq] for seq in seqs)
        return results

    def _acks(self, pending: set[int]) -> dict[int, int]:
        acks: dict[int, int] = {}
        for kind, seq, chunk in self._frames():
            if kind == NLMSG_ERROR and seq in pending:
                acks[seq] = _errno(chunk)
                pending.discard(seq)
                if not pending:
                    break
        return acks


def _errno(chunk: bytes) -> int:
    """The errno of an NLMSG_ERROR (struct nlmsgerr starts with the negative errno); 0 is an ack."""
    (code,) = struct.unpack_from("=i", chunk, 16)
    return int(-code)
