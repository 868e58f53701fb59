"""Which copy of a message counts. Pure: given what the log already holds for a batch's
message ids, decide what each incoming record adds to it.

The rules, which make the result independent of arrival order:
- a (message id, request id) counts once; a later copy counts only if it is preferred (see
  ``_preferred``: a parent's copy over a sidechain's, then strictly more tokens, then a fixed
  tie-break), and then replaces the earlier one (a revision);
- a sidechain copy of a message that also has a non-sidechain copy is a replay: it never
  counts, and if it arrived first it is retracted when the parent's copy arrives;
- across feeds (issue 16) a request counts once: an OpenTelemetry copy (no message id: it
  is keyed by its request id) of a request the transcript also has never counts, and if it
  arrived first it is retracted when the transcript's copy arrives (the transcript's is the
  richer record: it splits 5-minute from 1-hour cache writes). The cost Claude Code
  reported with the OpenTelemetry copy stays with the request's counted copy, whichever
  came first (a revision that only adds it), for the comparison with ours.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from usage.events import EventKind, Feed, UsageRecord

Key = tuple[str, str]  # (message id, request id)
_OTLP = Feed.OTLP.value  # a plain str: compared once or twice per record


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
    logged = list(logged)
    # Copies of another feed are rare (a user of both the agent and OpenTelemetry): only
    # then does the ledger follow request ids (it cost a transcript batch twice the time).
    mixed = any(record.feed for record in records) or any(entry.record.feed for entry in logged)
    ledger = _Ledger(logged, across_feeds=mixed)
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
    def __init__(self, logged: Iterable[Entry], *, across_feeds: bool) -> None:
        self._entries: dict[Key, Entry] = {}
        self._by_message: dict[str, list[Key]] = {}
        self._with_sidechain_copies: set[str] = set()  # message ids: the common case is none
        self._by_request: dict[str, list[Key]] = {}  # the keys of each request id
        self._across_feeds = across_feeds  # else no record nor entry is OpenTelemetry's
        for entry in logged:
            self._put(entry)

    def add(self, record: UsageRecord, source: int) -> list[Decision]:
        """The events ``record`` (the ``source``-th of the batch) causes; empty when it is a
        duplicate."""
        if record.feed == _OTLP and record.request_id:
            transcript = self._copies(record.request_id, transcript=True)
            if transcript:  # the transcript has this request: report the cost with it
                return self._add_report(transcript, record, source)
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
        if made and self._across_feeds and record.feed != _OTLP and record.request_id:
            made.extend(self._retract_otlp_copies(record.request_id, source))
        return made

    def _revise(self, existing: Entry, record: UsageRecord, source: int) -> list[Decision]:
        if existing.counted:
            if not _preferred(record, existing.record):
                return []
        elif record.is_sidechain or record.feed == _OTLP:
            # A retracted replay stays retracted, however large the copy; so does a retracted
            # OpenTelemetry copy, even once retention has taken the transcript's copy away.
            return []
        # else: a parent's copy under the key of a retracted sidechain copy counts again, as
        # it would have had it arrived before the retraction.
        record = _with_report(record, existing.record)
        entry = Entry(record=record, revision=existing.revision + 1, counted=True)
        self._put(entry)
        return [Decision(EventKind.REVISED, record, entry.revision, source)]

    def _record(self, record: UsageRecord, source: int) -> Decision:
        if self._across_feeds and record.feed != _OTLP and record.request_id:
            for key in self._copies(record.request_id, transcript=False):
                record = _with_report(record, self._entries[key].record)
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

    def _add_report(self, keys: list[Key], record: UsageRecord, source: int) -> list[Decision]:
        """An OpenTelemetry copy of a request the transcript has: it never counts, but the
        cost it reports is added to the counted transcript copy that has none (a revision
        of the same tokens); otherwise it is a duplicate."""
        made = []
        for key in keys:
            entry = self._entries[key]
            if entry.counted and entry.record.reported_cost_nanos is None:
                if record.reported_cost_nanos is None:
                    continue
                reported = entry.record._replace(reported_cost_nanos=record.reported_cost_nanos)
                revised = Entry(record=reported, revision=entry.revision + 1, counted=True)
                self._put(revised)
                made.append(Decision(EventKind.REVISED, reported, revised.revision, source))
        return made

    def _retract_otlp_copies(self, request_id: str, source: int) -> list[Decision]:
        made = []
        for key in self._copies(request_id, transcript=False):
            entry = self._entries[key]
            if entry.counted:
                retracted = entry._replace(revision=entry.revision + 1, counted=False)
                self._put(retracted)
                made.append(Decision(EventKind.RETRACTED, entry.record, retracted.revision, source))
        return made

    def _copies(self, request_id: str, *, transcript: bool) -> list[Key]:
        """The keys of ``request_id``'s copies from the transcript, or from OpenTelemetry."""
        return [
            key
            for key in self._by_request.get(request_id, [])
            if (self._entries[key].record.feed != _OTLP) == transcript
        ]

    def _has_parent_copy(self, message_id: str) -> bool:
        return any(
            not self._entries[key].record.is_sidechain
            for key in self._by_message.get(message_id, [])
        )

    def _put(self, entry: Entry) -> None:
        key = entry.key
        if key not in self._entries:
            self._by_message.setdefault(key[0], []).append(key)
            if key[1] and self._across_feeds:
                self._by_request.setdefault(key[1], []).append(key)
        if entry.record.is_sidechain:
            self._with_sidechain_copies.add(key[0])
        self._entries[key] = entry


def _with_report(record: UsageRecord, held: UsageRecord) -> UsageRecord:
    """``record`` replacing ``held`` as its request's counted copy keeps the cost Claude Code
    reported for the request, if ``record`` itself has none."""
    if record.reported_cost_nanos is None and held.reported_cost_nanos is not None:
        return record._replace(reported_cost_nanos=held.reported_cost_nanos)
    return record


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
