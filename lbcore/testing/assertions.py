"""Assertions about where traffic went, that read well in a test and fail with a clear message.

They take what the simulator's traffic API returns: :class:`~lbcore.sim.Connection` objects (None
for a refused connection), ``rip:rport`` strings, or a :class:`~lbcore.whatif.Result`::

    conns = [lb_deployed.connect(c, VIP, 8080) for c in lb_deployed.clients(300)]
    assert_balanced(conns, tolerance=0.2)
    assert_sticky(conns + [lb_deployed.connect(c, VIP, 8080) for c in lb_deployed.clients(300)])

.. versionadded:: 0.4
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from lbcore.errors import InvalidField
from lbcore.sim.backend import Connection
from lbcore.whatif import Result

#: What the assertions read: connections (None: refused), endpoints, or a what-if result.
Results = Result | Iterable[Connection | str | None]


def _endpoints(results: Results) -> list[str | None]:
    if isinstance(results, Result):
        return [s.endpoint for s in results.log]
    found: list[str | None] = []
    for item in results:
        if item is None or isinstance(item, str):
            found.append(item)
        elif isinstance(item, Connection):
            found.append(item.endpoint)
        else:
            raise InvalidField("assert", "results", item, "is not a Connection, an endpoint or None")
    return found


def _pairs(results: Results) -> list[tuple[str, str | None]]:
    if isinstance(results, Result):
        return [(str(s.client), s.endpoint) for s in results.log]
    pairs: list[tuple[str, str | None]] = []
    for item in results:
        if not isinstance(item, Connection):
            raise InvalidField("assert_sticky", "results", item,
                               "is not a Connection (a refused one, None, has no client to follow)")
        pairs.append((str(item.client), item.endpoint))
    return pairs


def assert_balanced(results: Results, *, tolerance: float = 0.1, among: Iterable[str] | None = None,
                    weights: Mapping[str, float] | None = None, refused_ok: bool = False) -> None:
    """Assert that the real servers took their share of the connections, within ``tolerance``.

    Args:
        results: the connections (or endpoints, or a what-if result).
        tolerance: how far each share may be from its expected share, as a fraction of the
            expected share (0.1: 30 % expected allows 27 % to 33 %).
        among: the real servers (``rip:rport``) that should share them; by default those that
            took any (so name them to catch one that took none).
        weights: ``rip:rport`` -> weight; the expected share is proportional (equal by default).
        refused_ok: allow refused connections (None); by default one is a failure.

    Raises:
        AssertionError: a share is out of tolerance, a real server outside ``among`` took some,
            or a connection was refused; the message lists every real server's count and share.
        InvalidField: ``results`` holds something else, or ``tolerance`` is negative.
    """
    __tracebackhide__ = True
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise InvalidField("assert_balanced", "tolerance", tolerance, "is not a fraction >= 0")
    endpoints = _endpoints(results)
    refused = sum(1 for e in endpoints if e is None)
    counts = Counter(e for e in endpoints if e is not None)
    servers = list(among) if among is not None else sorted(counts)
    if weights is not None:
        servers = list(dict.fromkeys([*servers, *weights]))
    total = sum(counts.values())
    problems: list[str] = []
    if refused and not refused_ok:
        problems.append(f"{refused} of {len(endpoints)} connections were refused")
    strangers = sorted(set(counts) - set(servers))
    if strangers:
        problems.append(f"real servers outside {servers} took connections: {strangers}")
    if not total:
        problems.append("no connection reached a real server")
    weight_of = {s: float((weights or {}).get(s, 1.0 if weights is None else 0.0)) for s in servers}
    weight_sum = sum(weight_of.values()) or 1.0
    rows = []
    for server in servers:
        expected = weight_of[server] / weight_sum
        share = counts[server] / total if total else 0.0
        off = abs(share - expected) > tolerance * expected + 1e-12
        rows.append(f"  {server}: {counts[server]} ({share:.1%}, expected {expected:.1%}){'  <- off' if off else ''}")
        if off and total:
            problems.append(f"{server} took {share:.1%}, expected {expected:.1%} +/- {tolerance:.0%} of it")
    rows += [f"  {server}: {counts[server]} ({counts[server] / total:.1%}, expected none)  <- not among them"
             for server in strangers]
    if problems:
        raise AssertionError("not balanced: " + "; ".join(problems) + f"\n{total} connections:\n" + "\n".join(rows))


def assert_sticky(results: Results, *, allow_moves_from: Iterable[str] = ()) -> None:
    """Assert that every client reached one real server only, as persistence (or a hash) promises.

    Args:
        results: connections in the order they were made (or a what-if result).
        allow_moves_from: real servers (``rip:rport``, or an address for every port) that a
            client may leave once, e.g. the one a test failed: it must then stay on its new one.

    Raises:
        AssertionError: a client reached several real servers (or moved back); the message names
            each such client and the real servers it reached, in order.
        InvalidField: ``results`` holds something that is not a Connection.
    """
    __tracebackhide__ = True
    allowed = set(allow_moves_from)
    seen: dict[str, list[str | None]] = {}
    for client, endpoint in _pairs(results):
        path = seen.setdefault(client, [])
        if endpoint is not None and (not path or path[-1] != endpoint):
            path.append(endpoint)
    bad = {}
    for client, path in seen.items():
        if len(path) <= 1:
            continue
        leaving = path[0]
        ok = len(path) == 2 and leaving is not None and (
            leaving in allowed or leaving.rpartition(":")[0].strip("[]") in allowed)
        if not ok:
            bad[client] = path
    if bad:
        shown = [f"  {client}: {' -> '.join(str(e) for e in path)}" for client, path in list(bad.items())[:20]]
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise AssertionError(f"not sticky: {len(bad)} of {len(seen)} clients reached more than one real server:\n"
                             + "\n".join(shown) + more)
