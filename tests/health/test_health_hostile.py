"""Hostile patterns cannot stall the health loop: bodies and replies are matched in linear time."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from lbcore.errors import InvalidField
from lbcore.health import AsyncioProber, HTTPCheck, Policy, TCPCheck, UDPCheck, probe_for
from lbcore.health._regex import Unbounded, compile_pattern

LOCAL = ipaddress.ip_address("127.0.0.1")
HOSTILE = r"^(a+)+$"


def test_hostile_body_regex_does_not_stall_monitor() -> None:
    # Python's re needs about 2**28 steps for this body (minutes); RE2 answers at once.
    body = b"a" * 28 + b"!"

    async def main() -> dict[str, tuple[bool, str, float]]:
        loop = asyncio.get_running_loop()

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + body)
            await writer.drain()
            writer.close()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        http = await asyncio.start_server(answer, str(LOCAL), 0)
        tcp = await asyncio.start_server(accept, str(LOCAL), 0)
        prober = AsyncioProber(loop)
        outcomes: dict[str, tuple[bool, str, float]] = {}
        finished = asyncio.Event()
        start = loop.time()

        def done_for(name: str):  # type: ignore[no-untyped-def]
            def done(ok: bool, detail: str) -> None:
                outcomes[name] = (ok, detail, loop.time() - start)
                if len(outcomes) == 2:
                    finished.set()
            return done

        policy = Policy(timeout=30.0)  # generous: the machine is shared; the outcome is what counts
        prober.probe(probe_for(HTTPCheck(body=HOSTILE), policy, LOCAL, http.sockets[0].getsockname()[1]),
                     done_for("http"))
        prober.probe(probe_for(TCPCheck(), policy, LOCAL, tcp.sockets[0].getsockname()[1]), done_for("tcp"))
        await asyncio.wait_for(finished.wait(), 60)
        http.close()
        tcp.close()
        return outcomes

    outcomes = asyncio.run(main())
    ok, detail, _ = outcomes["http"]
    assert not ok and "does not match" in detail  # matched to the end, not cut off by the timeout
    ok, detail, elapsed = outcomes["tcp"]
    assert ok and detail == "connected"
    assert elapsed < 10.0  # a backtracking match of this body takes minutes


def test_hostile_reply_regex_is_matched_in_linear_time() -> None:
    matcher = compile_pattern(rb"^(a+)+$")
    assert matcher.search(b"a" * 5000 + b"!") is None
    assert matcher.search(b"a" * 5000) is not None


def test_pattern_re2_refuses_is_invalid_field() -> None:
    with pytest.raises(InvalidField) as caught:
        HTTPCheck(body=r"(a)\1")
    assert caught.value.field == "body" and "linear time" in caught.value.reason
    with pytest.raises(InvalidField) as caught:
        UDPCheck(payload=b"x", reply=rb"(?=a)a")
    assert caught.value.field == "reply"


def test_without_re2_only_bounded_patterns_are_taken() -> None:
    assert compile_pattern(r"status: [0-9]+ ok", use_re2=False).search("status: 200 ok") is not None
    for pattern in (HOSTILE, r"a*b*", r"(ab)*", r"(a)\1", r"(?=a)a"):
        with pytest.raises(Unbounded):
            compile_pattern(pattern, use_re2=False)


def test_http_check_https_yes_is_invalid_field() -> None:
    with pytest.raises(InvalidField) as caught:
        HTTPCheck(https="yes")  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.value) == ("https", "yes")
