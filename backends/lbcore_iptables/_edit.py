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

from lbcore import dnat
from lbcore.errors import NotOwned, ParseError
from lbcore.model import ServiceKey, VirtualService
from lbcore.rules import Rule, RuleKey
from lbcore_iptables import _entries as e
from lbcore_iptables import _layout as layout


def _target(table: Any, entry: Any) -> str:
    return (table._iptc.iptc_get_target(ctypes.pointer(entry), table._handle) or b"").decode()


def owned(table: Any, chain: str) -> bool:
    """Whether ``chain`` exists and is lbcore's: its first rule is the owner mark."""
    if not table.is_chain(chain):
        return False
    entry = table.first_rule(chain)
    if not entry or _target(table, entry):
        return False
    try:
        return e.comments_of(e.raw_entry(entry)) == layout.OWNER_MARK
    except ValueError:  # a match whose size runs past the entry: not one lbcore wrote
        return False


def not_owned(table_name: str, chain: str) -> NotOwned:
    """The error for a chain with lbcore's name that lbcore did not make."""
    return NotOwned(f"the {table_name} chain {chain} has a name lbcore uses but is not lbcore's (its first "
                    f"rule is not the owner mark `-m comment --comment {layout.OWNER_MARK}`): lbcore neither "
                    "reads nor changes it; rename or delete it to let lbcore use the name")


def listing(table: Any, chain: str, targets: Collection[str] | None = None) -> Iterator[tuple[str, str]]:
    """(descriptor, target) of each entry of one of lbcore's chains after its owner mark; nothing if
    the chain does not exist. A built-in chain is listed whole.

    With ``targets``, only the entries that jump to one of them (the others' comments are not decoded).
    """
    if not table.is_chain(chain):
        return
    entry = table.first_rule(chain)
    if entry and not table.builtin_chain(chain):
        entry = table.next_rule(entry)  # the owner mark
    while entry:
        target = (table._iptc.iptc_get_target(ctypes.pointer(entry), table._handle) or b"").decode()
        if targets is None or target in targets:
            yield e.comments_of(e.raw_entry(entry)), target
        entry = table.next_rule(entry)


def jumps_to(table: Any, chain: str, target: str) -> list[int]:
    """The positions in ``chain`` of the entries that jump to ``target`` (no comment is read;
    in lbcore's chains, position 0 is the owner mark, which jumps nowhere)."""
    found, position = [], 0
    entry = table.first_rule(chain) if table.is_chain(chain) else None
    while entry:
        if (table._iptc.iptc_get_target(ctypes.pointer(entry), table._handle) or b"").decode() == target:
            found.append(position)
        position += 1
        entry = table.next_rule(entry)
    return found


class _Editor:
    def __init__(self, table: Any, table_name: str) -> None:
        self.table = table
        self.table_name = table_name
        self.lib = table._iptc
        self.handle = table._handle
        self.chains: set[str] | None = None

    def _check(self, ok: int, what: str) -> None:
        if ok != 1:
            errno = ctypes.get_errno()
            message = self.lib.iptc_strerror(errno)
            raise OSError(errno, f"{what}: {message.decode() if isinstance(message, bytes) else message}")

    def exists(self, chain: str) -> bool:
        return bool(self.lib.iptc_is_chain(chain.encode(), self.handle))

    def ensure_chain(self, chain: str) -> bool:
        """Create ``chain`` with the owner mark unless it exists; whether it was created.

        Raises:
            NotOwned: a chain of that name exists without the owner mark.
        """
        if self.exists(chain):
            if not owned(self.table, chain):
                raise not_owned(self.table_name, chain)
            return False
        self._check(self.lib.iptc_create_chain(chain.encode(), self.handle), f"create chain {chain}")
        self.append(chain, layout.owner_entry())
        return True

    def write_chain(self, chain: str, entries: list[bytes]) -> None:
        if not self.ensure_chain(chain):
            self._check(self.lib.iptc_flush_entries(chain.encode(), self.handle), f"flush {chain}")
            self.append(chain, layout.owner_entry())
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
        present = [c for c in chains if self.exists(c)]
        for chain in present:
            if not owned(self.table, chain):
                raise not_owned(self.table_name, chain)
        for chain in present:
            self._check(self.lib.iptc_flush_entries(chain.encode(), self.handle), f"flush {chain}")
        for chain in present:
            self._check(self.lib.iptc_delete_chain(chain.encode(), self.handle), f"delete chain {chain}")

    def hook(self, table_name: str) -> None:
        """lbcore's chains, and one jump to each from its built-in chain (added once).

        Raises:
            NotOwned: one of these chains exists without the owner mark.
        """
        for name, builtin, chain in layout.HOOKS:
            if name != table_name:
                continue
            self.ensure_chain(chain)
            if chain == layout.SERVICES:
                for rank in layout.SERVICE_RANKS:
                    self.ensure_chain(rank)
                    if not any(text == layout.OWNER_COMMENT for text, _ in listing(self.table, chain, {rank})):
                        self.append(chain, layout.hook_entry(rank))
            # Only the entries that jump to our chain have their comments read.
            present = any(text == layout.OWNER_COMMENT for text, _ in listing(self.table, builtin, {chain}))
            if not present:
                self.append(builtin, layout.hook_entry(chain))


Change = tuple[VirtualService | None, VirtualService | None]  # (as it is, as it is to be)


def edit(table: Any, table_name: str, services: Mapping[ServiceKey, Change],
         rules: Mapping[RuleKey, Rule | None]) -> bool:
    """Make ``table`` hold the new side of ``services`` and ``rules`` (None: absent).

    Returns False if nothing of them belongs in this table.

    Raises:
        NotOwned: a chain the edit needs has lbcore's name but not its owner mark.
    """
    if not touches(table_name, services, rules):
        return False
    mine_rules = {k: r for k, r in rules.items() if k[0] in TABLE_OF and TABLE_OF[k[0]] == table_name}
    mine_services = services if table_name == "nat" else {}
    ed = _Editor(table, table_name)
    ed.hook(table_name)
    if mine_services:
        _services(ed, mine_services)
    if mine_rules:
        _rules(ed, mine_rules)
    return True


def touches(table_name: str, services: Mapping[ServiceKey, Change], rules: Mapping[RuleKey, object]) -> bool:
    """Whether any of these changes lives in table ``table_name``."""
    if table_name == "nat" and services:
        return True
    return any(TABLE_OF.get(k[0]) == table_name for k in rules)


#: The table of each kind of rule that netfilter holds (the others are rtnetlink's: _routes).
TABLE_OF = dnat.RULE_TABLES


def _services(ed: _Editor, services: Mapping[ServiceKey, Change]) -> None:
    for old, new in services.values():
        if old is not None:  # its jump (found by its target, no comment read) and its chains go
            rank, own = layout.rank_chain(old), layout.service_chain(old.key)
            ed.delete_at(rank, jumps_to(ed.table, rank, own))
            ed.drop_chains(list(layout.service_chains(old)))
        if new is not None:
            built = layout.service_chains(new)
            own = layout.service_chain(new.key)
            for chain, entries in built.items():  # the real servers' chains first: the service jumps to them
                if chain != own:
                    ed.write_chain(chain, entries)
            ed.write_chain(own, built[own])
            ed.append(layout.rank_chain(new), layout.service_jump(new))


def _rules(ed: _Editor, rules: Mapping[RuleKey, Rule | None]) -> None:
    by_chain: dict[str, dict[RuleKey, Rule | None]] = {}
    for key, rule in rules.items():
        chain = layout.RULE_CHAINS[key[0]][1]
        by_chain.setdefault(chain, {})[key] = rule
    for chain, changes in by_chain.items():
        # Positions count from 1: entry 0 of the chain is its owner mark (listing() skips it).
        listed = list(listing(ed.table, chain))
        keys = [_key_of(text) for text, _ in listed]
        ed.delete_at(chain, [i + 1 for i, k in enumerate(keys) if k in changes])
        kept = [k for k in keys if k not in changes]
        ed.drop_chains([layout.mark_chain(k[1]) for k in changes if k[0] == "mark"])
        for key, rule in sorted(changes.items(), key=lambda kv: kv[0]):
            if rule is None:
                continue
            entries, own = layout.rule_entries(rule)
            for name, body in own.items():
                ed.write_chain(name, body)
            # In key order, whatever the history: marks ascending (the higher mark wins, MARK does
            # not stop the traversal), redirects and Auto-NATs by their keys (the first one wins).
            # Foreign entries (key None) an operator put in the chain stay where they are.
            position = max((i + 1 for i, k in enumerate(kept) if k is not None and k < key), default=0)
            for offset, raw in enumerate(entries):
                ed.insert(chain, raw, 1 + position + offset)
            kept[position:position] = [key] * len(entries)


def _key_of(descriptor: str) -> RuleKey | None:
    """The key of the rule an entry carries; None for an entry that is not one of lbcore's rules."""
    from lbcore.rules import rule_from_text

    if not descriptor:
        return None
    try:
        return rule_from_text(descriptor).key
    except ParseError:
        return None
