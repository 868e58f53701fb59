"""What the projections sum: one table of measures. Pure: standard library and usage.events.

Every projection (minute and hour buckets, totals, projects, sessions, hosts, per model)
sums the same measures. They are named here once, in order; the batch arithmetic, the Redis
store, its Lua scripts and ``Totals`` all follow this table. A new measure is one line in
``MEASURES`` (its name, its Redis hash field, where an event holds it) and one field of
``Totals``; the import fails if the two disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import add, attrgetter
from typing import NamedTuple

from usage.events import UsageEvent
from usage.pricing import price


class Measure(NamedTuple):
    name: str  # the field of ``Totals``
    field: str  # its Redis hash field: part of the stored layout, never reuse one
    source: str  # the attribute of a ``UsageEvent`` that holds it (dotted)


MEASURES = (
    Measure("input_tokens", "i", "record.input_tokens"),
    Measure("output_tokens", "o", "record.output_tokens"),
    Measure("cache_creation_tokens", "cc", "record.cache_creation_tokens"),
    Measure("cache_read_tokens", "cr", "record.cache_read_tokens"),
    Measure("messages", "n", "messages"),
    Measure("cost_nanos", "c", "cost_nanos"),
    Measure("web_search_requests", "ws", "record.web_search_requests"),
    Measure("web_search_cost_nanos", "wc", "web_search_cost_nanos"),
    # Claude Code's own cost figure (OpenTelemetry's cost_usd) and ours for the same
    # requests, for comparison (issue 16): zero, so never stored, for transcript records.
    Measure("reported_cost_nanos", "rc", "reported_cost_nanos"),
    Measure("compared_cost_nanos", "rq", "compared_cost_nanos"),
)
FIELDS = tuple(measure.field for measure in MEASURES)
# The measure that says whether anything is left in a hash (an owner with no messages).
MESSAGES_FIELD = "n"


class Totals(NamedTuple):
    """Sums of the measures, in ``MEASURES`` order."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    messages: int = 0
    cost_nanos: int = 0  # web search fees included
    web_search_requests: int = 0
    web_search_cost_nanos: int = 0
    reported_cost_nanos: int = 0  # what Claude Code reported, where it reported a cost
    compared_cost_nanos: int = 0  # our cost of those same requests

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_tokens
            + self.cache_read_tokens
        )

    @property
    def input_output_tokens(self) -> int:
        """What plan limits count."""
        return self.input_tokens + self.output_tokens

    def minus(self, other: Totals) -> Totals:
        return Totals._make(mine - theirs for mine, theirs in zip(self, other, strict=True))


if Totals._fields != tuple(measure.name for measure in MEASURES):
    raise ImportError("usage.measures: Totals' fields must follow MEASURES, in order")
if MESSAGES_FIELD not in FIELDS:
    raise ImportError("usage.measures: MESSAGES_FIELD must be one of the measures")

# One C call per event for all its values: the ingest takes them from every event. The
# cost is the one the event carries: sums take it from ``repriced(event)``.
values_of: Callable[[UsageEvent], tuple[int, ...]] = attrgetter(
    *(measure.source for measure in MEASURES)
)


def repriced(event: UsageEvent) -> UsageEvent:
    """``event`` with its cost worked out afresh from its record and the price data in
    force. The cost an event carries is the one of its ingest's price data: the projections
    never sum that one, so that new price data (a genai-prices upgrade, an overlay edit)
    re-prices every retained event in the rebuild that follows."""
    record = event.record
    cost = price(record.model, record, record.timestamp)
    figures = (0, False, 0) if cost is None else (cost.total_nanos, True, cost.web_search_nanos)
    if figures == (event.cost_nanos, event.priced, event.web_search_cost_nanos):
        return event  # the usual case: priced at ingest with the same data
    total, priced, web = figures
    return event._replace(cost_nanos=total, priced=priced, web_search_cost_nanos=web)


def sum_totals(events: Iterable[UsageEvent]) -> Totals:
    """The measures of ``events``, summed (priced with the price data in force)."""
    sums = [0] * len(MEASURES)
    for event in events:
        sums[:] = map(add, sums, values_of(repriced(event)))
    return Totals._make(sums)
