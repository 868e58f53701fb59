"""Issue 13: fast mode, the long-context tier of every model that has one, and web search,
each priced as Anthropic bills it. Pure.

Every expectation is worked out by hand from Anthropic's list prices (USD per million
tokens; nanodollars per token = USD per MTok x 1,000; a web search is $10 / 1,000 = $0.01 =
10,000,000 nanodollars). The records go through ``parse_record``, as the ingest reads them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from usage import pricing
from usage.events import UsageRecord, parse_record
from usage.pricing import cost_nanos

BEFORE_GA = datetime(2026, 2, 20, 12, 0, tzinfo=UTC)  # Opus 4.6's 1M context still in beta
NOW = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)  # after 2026-03-13: 4.6's 1M context is GA
SONNET_4 = "claude-sonnet-4-20250514"
SONNET_45 = "claude-sonnet-4-5-20250929"
OPUS_46 = "claude-opus-4-6"


def record(
    model: str,
    at: datetime,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_5m: int = 0,
    cache_1h: int = 0,
    cache_read: int = 0,
    speed: str | None = None,
    web_searches: int | None = None,
) -> UsageRecord:
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_5m + cache_1h,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache_5m,
            "ephemeral_1h_input_tokens": cache_1h,
        },
        "service_tier": "standard",
    }
    if speed is not None:
        usage["speed"] = speed
    if web_searches is not None:
        usage["server_tool_use"] = {"web_search_requests": web_searches, "web_fetch_requests": 0}
    line = {
        "type": "assistant",
        "timestamp": at.isoformat(),
        "requestId": "req_1",
        "message": {"id": "msg_1", "model": model, "usage": usage},
    }
    parsed = parse_record(line, host="h", now=at)
    assert parsed is not None
    return parsed


def cost(parsed: UsageRecord) -> int | None:
    return cost_nanos(parsed.model, parsed, parsed.timestamp)


# The input side of a request is input + cache writes + cache reads: 100,000 + 50,000 +
# 50,000 = 200,000 is not above 200,000; one more cache read token is.
UNDER: dict[str, Any] = {
    "input_tokens": 100_000,
    "output_tokens": 1_000,
    "cache_5m": 50_000,
    "cache_read": 50_000,
}
OVER: dict[str, Any] = {**UNDER, "cache_read": 50_001}


@pytest.mark.parametrize(
    ("model", "at", "size", "expected"),
    [
        # Sonnet 4 and 4.5: $3 / $15 / $3.75 write 5m / $0.30 read; above 200K the whole
        # request pays $6 / $22.50 / $7.50 / $0.60.
        pytest.param(
            SONNET_4,
            NOW,
            UNDER,
            100_000 * 3_000 + 1_000 * 15_000 + 50_000 * 3_750 + 50_000 * 300,  # 517,500,000
            id="sonnet 4 at 200,000",
        ),
        pytest.param(
            SONNET_4,
            NOW,
            OVER,
            100_000 * 6_000 + 1_000 * 22_500 + 50_000 * 7_500 + 50_001 * 600,  # 1,027,500,600
            id="sonnet 4 at 200,001",
        ),
        pytest.param(
            SONNET_45,
            NOW,
            UNDER,
            100_000 * 3_000 + 1_000 * 15_000 + 50_000 * 3_750 + 50_000 * 300,  # 517,500,000
            id="sonnet 4.5 at 200,000",
        ),
        pytest.param(
            SONNET_45,
            NOW,
            OVER,
            100_000 * 6_000 + 1_000 * 22_500 + 50_000 * 7_500 + 50_001 * 600,  # 1,027,500,600
            id="sonnet 4.5 at 200,001",
        ),
        # Opus 4.6: $5 / $25 / $6.25 / $0.50; above 200K $10 / $37.50 / $12.50 / $1, until
        # the 1M context became generally available at standard prices on 2026-03-13.
        pytest.param(
            OPUS_46,
            BEFORE_GA,
            UNDER,
            100_000 * 5_000 + 1_000 * 25_000 + 50_000 * 6_250 + 50_000 * 500,  # 862,500,000
            id="opus 4.6 at 200,000",
        ),
        pytest.param(
            OPUS_46,
            BEFORE_GA,
            OVER,
            100_000 * 10_000 + 1_000 * 37_500 + 50_000 * 12_500 + 50_001 * 1_000,  # 1,712,501,000
            id="opus 4.6 at 200,001",
        ),
        pytest.param(
            OPUS_46,
            NOW,
            OVER,
            100_000 * 5_000 + 1_000 * 25_000 + 50_000 * 6_250 + 50_001 * 500,  # 862,500,500
            id="opus 4.6 at 200,001 after its 1M context went GA",
        ),
    ],
)
def test_a_request_above_200k_input_side_tokens_pays_the_premium_rates_whole(
    model: str, at: datetime, size: dict[str, Any], expected: int
) -> None:
    assert cost(record(model, at, **size)) == expected


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # 1,000 tokens written to the 1-hour cache: twice the input price per token.
        pytest.param(SONNET_4, 1_000 * 6_000, id="sonnet 4: $6"),
        pytest.param(SONNET_45, 1_000 * 6_000, id="sonnet 4.5: $6"),
        pytest.param("claude-sonnet-4-6", 1_000 * 6_000, id="sonnet 4.6: $6"),
        pytest.param("claude-haiku-4-5-20251001", 1_000 * 2_000, id="haiku 4.5: $2"),
        pytest.param("claude-opus-4-5-20251101", 1_000 * 10_000, id="opus 4.5: $10"),
        pytest.param(OPUS_46, 1_000 * 10_000, id="opus 4.6: $10"),
        pytest.param("claude-opus-4-7", 1_000 * 10_000, id="opus 4.7: $10"),
        pytest.param("claude-opus-4-8", 1_000 * 10_000, id="opus 4.8: $10"),
        pytest.param("claude-opus-5", 1_000 * 10_000, id="opus 5: $10"),
        pytest.param("claude-opus-5-5", 1_000 * 8_000, id="opus 5.5: $8"),
        pytest.param("claude-sonnet-5", 1_000 * 4_000, id="sonnet 5: $4"),
        pytest.param("claude-sonnet-5-5", 1_000 * 4_000, id="sonnet 5.5: $4"),
        pytest.param("claude-fable-5-2", 1_000 * 16_000, id="fable 5.2: $16"),
        pytest.param("claude-mythos-5-2", 1_000 * 16_000, id="mythos 5.2: $16"),
    ],
)
def test_a_1_hour_cache_write_costs_twice_the_input_price_on_each_current_model(
    model: str, expected: int
) -> None:
    assert cost(record(model, NOW, cache_1h=1_000)) == expected


@pytest.mark.parametrize(
    ("at", "size", "expected"),
    [
        # Opus 4.6 fast mode: six times the standard rates ($30 / $150 / $37.50 / $60 / $3).
        pytest.param(
            NOW,
            {"input_tokens": 1_000, "output_tokens": 1_000},
            6 * (1_000 * 5_000 + 1_000 * 25_000),  # 180,000,000
            id="input and output",
        ),
        pytest.param(
            NOW,
            {"cache_5m": 1_000, "cache_1h": 1_000, "cache_read": 1_000},
            6 * (1_000 * 6_250 + 1_000 * 10_000 + 1_000 * 500),  # 100,500,000
            id="cache writes and reads",
        ),
        # Above 200K before the GA: six times the long-context rates, $60 / $225 (Anthropic's
        # fast-mode table for Opus 4.6 said so: "12x standard" input, $225 output).
        pytest.param(
            BEFORE_GA,
            OVER,
            6 * (100_000 * 10_000 + 1_000 * 37_500 + 50_000 * 12_500 + 50_001 * 1_000),
            id="above 200K before the GA: 6x the long-context rates",
        ),
        pytest.param(
            NOW,
            OVER,
            6 * (100_000 * 5_000 + 1_000 * 25_000 + 50_000 * 6_250 + 50_001 * 500),
            id="above 200K after the GA: 6x the standard rates",
        ),
    ],
)
def test_a_fast_mode_request_costs_six_times_the_rates_of_its_size(
    at: datetime, size: dict[str, Any], expected: int
) -> None:
    assert cost(record(OPUS_46, at, **size, speed="fast")) == expected


def test_a_standard_speed_request_costs_the_standard_rates() -> None:
    standard = record(OPUS_46, NOW, input_tokens=1_000, output_tokens=1_000, speed="standard")
    assert cost(standard) == 1_000 * 5_000 + 1_000 * 25_000  # 30,000,000


def test_fast_mode_on_a_model_with_no_known_fast_rates_is_unpriced_not_standard() -> None:
    assert cost(record(SONNET_45, NOW, input_tokens=1_000, speed="fast")) is None


def test_a_web_search_costs_a_cent_beside_the_tokens() -> None:
    searched = record(SONNET_45, NOW, input_tokens=1_000, output_tokens=100, web_searches=3)

    priced = pricing.price(searched.model, searched, searched.timestamp)

    assert priced is not None
    assert priced.web_search_nanos == 3 * 10_000_000  # $10 / 1,000 searches = $0.01 each
    assert priced.total_nanos == 1_000 * 3_000 + 100 * 15_000 + 3 * 10_000_000  # 34,500,000
    assert cost(searched) == 34_500_000


def test_fast_mode_does_not_multiply_the_web_search_fee() -> None:
    searched = record(OPUS_46, NOW, input_tokens=1_000, speed="fast", web_searches=1)
    assert cost(searched) == 6 * 1_000 * 5_000 + 10_000_000  # 40,000,000


def test_a_synthetic_record_costs_nothing() -> None:
    synthetic = record("<synthetic>", NOW, input_tokens=1_000, web_searches=1, speed="fast")
    assert cost(synthetic) == 0


def test_an_unknown_model_stays_unpriced() -> None:
    assert cost(record("claude-unknown-9", NOW, input_tokens=1_000, web_searches=1)) is None
