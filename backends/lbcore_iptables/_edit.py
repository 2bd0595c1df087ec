"""Edit one libiptc table copy so that it holds the given objects; the caller commits it.

Each object is rewritten whole: its dispatch entries are deleted (found by their descriptor or
their target chain) and its chains flushed and deleted, then, if it is to exist, its chains are
made anew and its dispatch entries inserted. Nothing here looks at a chain that is not lbcore's,
except the built-in chains, for lbcore's own hook jumps.
"""

from __future__ import annotations

import ctypes
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from lbcore.model import ServiceKey, VirtualService
from lbcore.rules import FirewallMark, Rule, RuleKey
from lbcore_iptables import _entries as e
from lbcore_iptables import _layout as layout


def listing(table: Any, chain: str, targets: Collection[str] | None = None) -> Iterator[tuple[str, str]]:
    """(descriptor, target) of each entry of ``chain``; nothing if the chain does not exist.

    With ``targets``, only the entries that jump to one of them (the others' comments are not decoded).
    """
    if not table.is_chain(chain):
        return
    entry = table.first_rule(chain)
    while entry:
        target = (table._iptc.iptc_get_target(ctypes.pointer(entry), table._handle) or b"").decode()
        if targets is None or target in targets:
            yield e.comments_of(e.raw_entry(entry)), target
        entry = table.next_rule(entry)


class _Editor:
    def __init__(self, table: Any) -> None:
        self.table = table
        self.lib = table._iptc
        self.handle = table._handle
        self.chains: set[str] | None = None

    def _check(self, ok: int, what: str) -> None:
        if ok != 1:
            errno = ctypes.get_errno()
            message = self.lib.iptc_strerror(errno)
            raise OSError(errno, f"{what}: {message.decode() if isinstance(message, bytes) else message}")

    def names(self) -> set[str]:
        if self.chains is None:
            self.chains = set()
            chain = self.lib.iptc_first_chain(self.handle)
            while chain:
                self.chains.add(chain.decode())
                chain = self.lib.iptc_next_chain(self.handle)
        return self.chains

    def ensure_chain(self, chain: str) -> None:
        if chain not in self.names():
            self._check(self.lib.iptc_create_chain(chain.encode(), self.handle), f"create chain {chain}")
            self.names().add(chain)

    def write_chain(self, chain: str, entries: list[bytes]) -> None:
        if chain in self.names():
            self._check(self.lib.iptc_flush_entries(chain.encode(), self.handle), f"flush {chain}")
        else:
            self.ensure_chain(chain)
        for raw in entries:
            self.append(chain, raw)

    def append(self, chain: str, raw: bytes) -> None:
        buf = ctypes.create_string_buffer(raw, len(raw))
        self._check(self.lib.iptc_append_entry(chain.encode(), ctypes.cast(buf, ctypes.c_void_p), self.handle),
                    f"append to {chain}")

    def insert(self, chain: str, raw: bytes, position: int) -> None:
        buf = ctypes.create_string_buffer(raw, len(raw))
        self._check(self.lib.iptc_insert_entry(chain.encode(), ctypes.cast(buf, ctypes.c_void_p), position,
                                               self.handle), f"insert into {chain}")

    def delete_at(self, chain: str, positions: list[int]) -> None:
        for position in sorted(positions, reverse=True):
            self._check(self.lib.iptc_delete_num_entry(chain.encode(), position, self.handle),
                        f"delete entry {position} of {chain}")

    def drop_chains(self, chains: list[str]) -> None:
        """Flush, then delete: a chain may be deleted only once nothing jumps to it."""
        present = [c for c in chains if c in self.names()]
        for chain in present:
            self._check(self.lib.iptc_flush_entries(chain.encode(), self.handle), f"flush {chain}")
        for chain in present:
            self._check(self.lib.iptc_delete_chain(chain.encode(), self.handle), f"delete chain {chain}")
            self.names().discard(chain)

    def hook(self, table_name: str) -> None:
        """lbcore's chains, and one jump to each from its built-in chain (added once)."""
        for name, builtin, chain in layout.HOOKS:
            if name != table_name:
                continue
            self.ensure_chain(chain)
            present = any(text == layout.OWNER_COMMENT and target == chain
                          for text, target in listing(self.table, builtin))
            if not present:
                self.append(builtin, layout.hook_entry(chain))


def edit(backend: Any, table: Any, table_name: str, services: Mapping[ServiceKey, VirtualService | None],
         rules: Mapping[RuleKey, Rule | None]) -> bool:
    """Make ``table`` hold ``services`` and ``rules`` (None: absent). False if none belongs here."""
    mine_rules = {k: r for k, r in rules.items() if k[0] != "policy-route" and _table_of(k) == table_name}
    mine_services = services if table_name == "nat" else {}
    if not mine_rules and not mine_services:
        return False
    ed = _Editor(table)
    ed.hook(table_name)
    if mine_services:
        _services(ed, mine_services)
    if mine_rules:
        _rules(ed, mine_rules)
    return True


def _table_of(key: RuleKey) -> str:
    return "mangle" if key[0] == "mark" else "nat"


def _services(ed: _Editor, services: Mapping[ServiceKey, VirtualService | None]) -> None:
    chains = {layout.service_chain(k): k for k in services}
    listed = list(listing(ed.table, layout.SERVICES))
    ed.delete_at(layout.SERVICES, [i for i, (_, target) in enumerate(listed) if target in chains])
    ranks = [_rank(text) for text, target in listed if target not in chains]
    names = ed.names()
    prefixes = tuple(s.replace("-S-", "-R-") + "-" for s in chains)
    stale = [c for c in names if c in chains or c.startswith(prefixes)]
    ed.drop_chains(sorted(stale, key=lambda c: c.startswith("LBCORE-S-"), reverse=True))
    for svc in services.values():
        if svc is None:
            continue
        built = layout.service_chains(svc)
        own = layout.service_chain(svc.key)
        for chain, entries in built.items():  # the real servers' chains first: the service jumps to them
            if chain != own:
                ed.write_chain(chain, entries)
        ed.write_chain(own, built[own])
        rank = layout.service_rank(svc)
        position = sum(1 for r in ranks if r <= rank)
        ed.insert(layout.SERVICES, layout.service_jump(svc), position)
        ranks.insert(position, rank)


def _rank(descriptor: str) -> int:
    if " -f " in f" {descriptor} ":
        return 0
    endpoint = descriptor.split()[2]
    return 2 if endpoint.endswith(":0") else 1


def _rules(ed: _Editor, rules: Mapping[RuleKey, Rule | None]) -> None:
    by_chain: dict[str, dict[RuleKey, Rule | None]] = {}
    for key, rule in rules.items():
        chain = {"mark": layout.MARKS, "redirect": layout.REDIRECTS, "auto-nat": layout.POSTROUTING}[key[0]]
        by_chain.setdefault(chain, {})[key] = rule
    for chain, changes in by_chain.items():
        listed = list(listing(ed.table, chain))
        keys = [_key_of(text) for text, _ in listed]
        ed.delete_at(chain, [i for i, k in enumerate(keys) if k in changes])
        kept = [k for k in keys if k not in changes]
        ed.drop_chains([layout.mark_chain(k[1]) for k in changes if k[0] == "mark"])
        for key, rule in sorted(changes.items(), key=lambda kv: kv[0]):
            if rule is None:
                continue
            entries, own = layout.rule_entries(rule)
            for name, body in own.items():
                ed.write_chain(name, body)
            if isinstance(rule, FirewallMark):  # marks in ascending order: the higher mark wins
                position = sum(1 for k in kept if k is not None and k < key)
                for offset, raw in enumerate(entries):
                    ed.insert(chain, raw, position + offset)
                kept[position:position] = [key] * len(entries)
            else:
                for raw in entries:
                    ed.append(chain, raw)
                kept.extend([key] * len(entries))


def _key_of(descriptor: str) -> RuleKey | None:
    from lbcore.rules import rule_from_text

    return rule_from_text(descriptor).key if descriptor else None
