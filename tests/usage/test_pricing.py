"""Tokens x model -> cost in integer nanodollars, checked against hand-computed figures from
Anthropic's published prices and against ccusage's figures for the sample logs. Pure."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from tests.conftest import SAMPLES, sample_lines
from usage.dedupe import decide
from usage.events import EventKind, InvalidRecord, UsageRecord, parse_record
from usage.pricing import Rates, TokenCounts, cost_nanos, rates_for

AT = datetime(2025, 10, 5, 21, 0, tzinfo=UTC)
SONNET_45 = "claude-sonnet-4-5-20250929"
OPUS_41 = "claude-opus-4-1-20250805"
HAIKU_35 = "claude-3-5-haiku-20241022"


def tokens(
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_5m: int = 0,
    cache_1h: int = 0,
    cache_read: int = 0,
) -> TokenCounts:
    return TokenCounts(input_tokens, output_tokens, cache_5m, cache_1h, cache_read)


# Nanodollars = tokens x USD per million tokens x 1,000. Sonnet 4.5: $3 input, $15 output,
# $3.75 5m write (1.25x input), $6 1h write (2x input), $0.30 read; above 200k input tokens
# per request: $6, $22.50, $7.50, $12, $0.60 for the whole request.
@pytest.mark.parametrize(
    ("model", "counts", "expected_nanos"),
    [
        pytest.param(SONNET_45, tokens(input_tokens=1000), 3_000_000, id="sonnet 4.5 input"),
        pytest.param(SONNET_45, tokens(output_tokens=1000), 15_000_000, id="sonnet 4.5 output"),
        pytest.param(SONNET_45, tokens(cache_5m=1000), 3_750_000, id="5m write 1.25x input"),
        pytest.param(SONNET_45, tokens(cache_1h=1000), 6_000_000, id="1h write 2x input"),
        pytest.param(SONNET_45, tokens(cache_read=1000), 300_000, id="read 0.1x input"),
        pytest.param(
            SONNET_45,
            tokens(10, 100, 1000, 2000, 5000),
            30_000 + 1_500_000 + 3_750_000 + 12_000_000 + 1_500_000,
            id="every token type",
        ),
        pytest.param(
            SONNET_45,
            tokens(100_000, 1000, 50_000, 0, 50_000),
            100_000 * 3000 + 1000 * 15000 + 50_000 * 3750 + 50_000 * 300,
            id="exactly 200k input is the base tier",
        ),
        pytest.param(
            SONNET_45,
            tokens(100_000, 1000, 50_000, 0, 50_001),
            100_000 * 6000 + 1000 * 22500 + 50_000 * 7500 + 50_001 * 600,
            id="200,001 input prices the whole request at the premium tier",
        ),
        pytest.param(
            SONNET_45,
            tokens(cache_1h=200_001),
            200_001 * 12_000,
            id="1h writes count towards the threshold and pay its premium",
        ),
        pytest.param(
            SONNET_45,
            tokens(input_tokens=200_000, output_tokens=10_000),
            200_000 * 3000 + 10_000 * 15000,
            id="output does not count towards the threshold",
        ),
        pytest.param(OPUS_41, tokens(1000, 1000), 15_000_000 + 75_000_000, id="opus 4.1"),
        pytest.param(
            OPUS_41,
            tokens(cache_5m=1000, cache_1h=1000, cache_read=1000),
            18_750_000 + 30_000_000 + 1_500_000,
            id="opus 4.1 cache",
        ),
        pytest.param(
            OPUS_41, tokens(input_tokens=300_000), 300_000 * 15_000, id="opus 4.1 has no tiers"
        ),
        pytest.param(HAIKU_35, tokens(1000, 1000, 1000), 800_000 + 4_000_000 + 1_000_000),
        pytest.param(SONNET_45, tokens(), 0, id="no tokens"),
        pytest.param("<synthetic>", tokens(1000, 1000), 0, id="synthetic is never billed"),
        pytest.param("<synthetic>", tokens(), 0, id="synthetic"),
    ],
)
def test_it_prices_a_request_as_anthropic_bills_it(
    model: str, counts: TokenCounts, expected_nanos: int
) -> None:
    assert cost_nanos(model, counts, AT) == expected_nanos


@pytest.mark.parametrize(
    "model", ["gpt-4o", "claude-sonnet-9-20300101", "claude", "", "mystery-model"]
)
def test_it_knows_no_price_for_an_unknown_model(model: str) -> None:
    assert cost_nanos(model, tokens(1000, 1000), AT) is None
    assert rates_for(model, AT) is None


def test_a_1h_write_costs_twice_the_input_and_a_5m_write_one_and_a_quarter() -> None:
    rates = rates_for(SONNET_45, AT)

    assert rates is not None
    assert rates.cache_write_1h == 2 * rates.input
    assert rates.cache_write_5m == rates.input * 5 / 4


def test_the_premium_tier_applies_to_every_token_type_above_200k() -> None:
    base = rates_for(SONNET_45, AT, context_tokens=200_000)
    premium = rates_for(SONNET_45, AT, context_tokens=200_001)

    assert base is not None
    assert premium is not None
    assert premium == Rates(
        input=Decimal(6),
        output=Decimal("22.5"),
        cache_write_5m=Decimal("7.5"),
        cache_write_1h=Decimal(12),
        cache_read=Decimal("0.6"),
    )
    assert base == Rates(
        input=Decimal(3),
        output=Decimal(15),
        cache_write_5m=Decimal("3.75"),
        cache_write_1h=Decimal(6),
        cache_read=Decimal("0.3"),
    )


def _counted_sample_records() -> list[UsageRecord]:
    """The sample tree's usage records, each message once, as the ingest path counts them."""
    records = []
    for line in sample_lines():
        try:
            record = parse_record(orjson.loads(line), host="h", now=AT)
        except (orjson.JSONDecodeError, InvalidRecord):
            continue
        if record is not None:
            records.append(record)
    counted: dict[tuple[str, str], UsageRecord | None] = {}
    for decision in decide(records, []).decisions:
        key = (decision.record.message_id, decision.record.request_id)
        counted[key] = None if decision.kind is EventKind.RETRACTED else decision.record
    return [record for record in counted.values() if record is not None]


def test_the_sample_cost_per_model_equals_ccusage() -> None:
    daily = json.loads((SAMPLES / "ccusage" / "ccusage_daily.json").read_text())
    expected = {
        breakdown["modelName"]: breakdown
        for day in daily["daily"]
        for breakdown in day["modelBreakdowns"]
    }
    ours: dict[str, dict[str, int]] = {}
    for record in _counted_sample_records():
        counts = TokenCounts(
            record.input_tokens,
            record.output_tokens,
            record.cache_creation_5m_tokens,
            record.cache_creation_1h_tokens,
            record.cache_read_tokens,
        )
        cost = cost_nanos(record.model, counts, record.timestamp)
        assert cost is not None, record.model
        model = ours.setdefault(record.model, {"cost": 0, "input": 0, "output": 0})
        model["cost"] += cost
        model["input"] += record.input_tokens
        model["output"] += record.output_tokens

    assert ours.pop("<synthetic>") == {"cost": 0, "input": 0, "output": 0}
    assert set(ours) == set(expected)
    for name, figures in expected.items():
        assert ours[name]["input"] == figures["inputTokens"]
        assert ours[name]["output"] == figures["outputTokens"]
        assert ours[name]["cost"] / 1e9 == pytest.approx(figures["cost"], abs=1e-6), name
