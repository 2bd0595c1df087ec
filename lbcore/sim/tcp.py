"""The TCP (and UDP) state machine of IPVS connections (ip_vs_proto_tcp.c, ip_vs_proto_udp.c)."""

from __future__ import annotations

from collections.abc import Mapping

NONE, ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, \
    LISTEN, SYNACK = range(11)
STATE_NAMES = ("NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE",
               "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK")
#: tcp_state_active(): only these states count in ActiveConn.
ACTIVE = frozenset({ESTABLISHED, SYN_SENT, SYN_RECV, SYNACK})
IS_ACTIVE = tuple(s in ACTIVE for s in range(11))
#: tcp_timeouts[] in seconds; --set changes ESTABLISHED and FIN_WAIT only.
DEFAULT_TIMEOUTS = (2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120)

# Packet flags and the event they raise, in tcp_state_idx() priority: rst, syn, fin, ack.
SYN, FIN, ACK, RST = 0x02, 0x01, 0x10, 0x04

NO, ES, SS, SR, FW, TW, CL, CW, LA, LI, SA = range(11)
# tcp_states[]: for each (direction table, event) the next state, indexed by the current state.
INPUT = {
    SYN: (SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR),
    FIN: (CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW),
    ACK: (ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES),
    RST: (CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR),
}
OUTPUT = {
    SYN: (SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR),
    FIN: (TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW),
    ACK: (ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES),
    RST: (CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL),
}
INPUT_ONLY = {
    SYN: (SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR),
    FIN: (CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW),
    ACK: (ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES),
    RST: (CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL),
}


def event(flags: int) -> int:
    """tcp_state_idx(): rst beats syn beats fin beats ack; 0 for a packet with none of them."""
    for bit in (RST, SYN, FIN, ACK):
        if flags & bit:
            return bit
    return 0


def _by_flags(table: Mapping[int, tuple[int, ...]]) -> tuple[tuple[int, ...], ...]:
    # Next states indexed by the packet's low flag byte, then the current state: one lookup per
    # packet. A packet with none of rst/syn/fin/ack moves to CLOSE.
    return tuple(table[event(f)] if event(f) else (CLOSE,) * 11 for f in range(32))


#: NEXT[direction table][flags & 0x1F][state] -> next state
NEXT_INPUT, NEXT_OUTPUT, NEXT_INPUT_ONLY = _by_flags(INPUT), _by_flags(OUTPUT), _by_flags(INPUT_ONLY)


UDP_STATE_NAME = "UDP"
