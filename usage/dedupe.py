"""Which copy of a message counts. Pure: given what the log already holds for a batch's
message ids, decide what each incoming record adds to it.

The rules, which make the result independent of arrival order:
- a (message id, request id) counts once; a later copy counts only if it is preferred (see
  ``_preferred``: a parent's copy over a sidechain's, then strictly more tokens, then a fixed
  tie-break), and then replaces the earlier one (a revision);
- a sidechain copy of a message that also has a non-sidechain copy is a replay: it never
  counts, and if it arrived first it is retracted when the parent's copy arrives.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from usage.events import EventKind, UsageRecord

Key = tuple[str, str]  # (message id, request id)


class Entry(NamedTuple):
    """The latest logged state of one (message id, request id). NamedTuples here: as
    immutable as frozen dataclasses and cheaper to build (one per record)."""

    record: UsageRecord
    revision: int
    counted: bool  # False once retracted

    @property
    def key(self) -> Key:
        return (self.record.message_id, self.record.request_id)


class Decision(NamedTuple):
    """One event to append. For a retraction ``record`` is the copy being withdrawn.
    ``source`` is the index, among the records decided on, of the record that caused it."""

    kind: EventKind
    record: UsageRecord
    revision: int
    source: int


@dataclass(frozen=True, slots=True)
class Outcome:
    decisions: list[Decision]
    duplicates: int


def decide(records: Sequence[UsageRecord], logged: Iterable[Entry]) -> Outcome:
    """Fold ``records`` (in arrival order) into the ``logged`` entries of their messages."""
    ledger = _Ledger(logged)
    decisions: list[Decision] = []
    duplicates = 0
    for index, record in enumerate(records):
        made = ledger.add(record, index)
        if made:
            decisions.extend(made)
        else:
            duplicates += 1
    return Outcome(decisions=decisions, duplicates=duplicates)


class _Ledger:
    def __init__(self, logged: Iterable[Entry]) -> None:
        self._entries: dict[Key, Entry] = {}
        self._by_message: dict[str, list[Key]] = {}
        self._with_sidechain_copies: set[str] = set()  # message ids: the common case is none
        for entry in logged:
            self._put(entry)

    def add(self, record: UsageRecord, source: int) -> list[Decision]:
        """The events ``record`` (the ``source``-th of the batch) causes; empty when it is a
        duplicate."""
        existing = self._entries.get((record.message_id, record.request_id))
        if existing is not None:
            made = self._revise(existing, record, source)
        elif record.is_sidechain and self._has_parent_copy(record.message_id):
            return []
        else:
            made = [self._record(record, source)]
        # Also after a revision: a parent's copy can arrive under a key that so far held a
        # sidechain copy, and it then retracts the message's other sidechain copies too.
        if made and not record.is_sidechain:
            made.extend(self._retract_sidechain_copies(record.message_id, source))
        return made

    def _revise(self, existing: Entry, record: UsageRecord, source: int) -> list[Decision]:
        if existing.counted:
            if not _preferred(record, existing.record):
                return []
        elif record.is_sidechain:
            return []  # a retracted replay stays retracted, however large the copy
        # else: a parent's copy under the key of a retracted sidechain copy counts again, as
        # it would have had it arrived before the retraction.
        entry = Entry(record=record, revision=existing.revision + 1, counted=True)
        self._put(entry)
        return [Decision(EventKind.REVISED, record, entry.revision, source)]

    def _record(self, record: UsageRecord, source: int) -> Decision:
        self._put(Entry(record=record, revision=0, counted=True))
        return Decision(EventKind.RECORDED, record, 0, source)

    def _retract_sidechain_copies(self, message_id: str, source: int) -> list[Decision]:
        if message_id not in self._with_sidechain_copies:
            return []
        made = []
        for key in self._by_message.get(message_id, []):
            entry = self._entries[key]
            if entry.record.is_sidechain and entry.counted:
                retracted = entry._replace(revision=entry.revision + 1, counted=False)
                self._put(retracted)
                made.append(Decision(EventKind.RETRACTED, entry.record, retracted.revision, source))
        return made

    def _has_parent_copy(self, message_id: str) -> bool:
        return any(
            not self._entries[key].record.is_sidechain
            for key in self._by_message.get(message_id, [])
        )

    def _put(self, entry: Entry) -> None:
        key = entry.key
        if key not in self._entries:
            self._by_message.setdefault(key[0], []).append(key)
        if entry.record.is_sidechain:
            self._with_sidechain_copies.add(key[0])
        self._entries[key] = entry


def _preferred(new: UsageRecord, old: UsageRecord) -> bool:
    """Whether ``new`` should replace ``old`` as the counted copy of one (message id,
    request id). A strict total order over copies, so the copy that ends up counted is the
    same whatever order copies arrive in: first-seen-wins would let arrival order pick the
    timestamp (Claude Code writes one line per content block, milliseconds apart), the
    session (resumed copies carry the new session id) or the host."""
    new_rank, old_rank = _rank(new), _rank(old)
    if new_rank != old_rank:
        return new_rank > old_rank
    return _tie_break(new) < _tie_break(old)


def _rank(record: UsageRecord) -> tuple[bool, int]:
    """Higher wins: the parent's copy over a sidechain's (ccusage's rule), then more tokens
    (a partial early copy loses to the full one)."""
    return (not record.is_sidechain, record.total_tokens)


def _tie_break(record: UsageRecord) -> tuple[datetime, str, str, str, str, int, int, int, int, int]:
    """Lower wins among equally ranked copies: the earliest line first (what a reader of
    a single file in order keeps, as ccusage does), then fixed fields."""
    return (
        record.timestamp,
        record.session_id,
        record.project_path,
        record.host,
        record.model,
        record.output_tokens,
        record.input_tokens,
        record.cache_creation_5m_tokens,
        record.cache_creation_1h_tokens,
        record.cache_read_tokens,
    )
