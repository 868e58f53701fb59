"""The price overlay: our dated entries over genai-prices, an operator's over both, the
checks that refuse a broken one, and the test that makes the overlay shrink."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pytest_django.fixtures import Settings as SettingsWrapper

from backend.checks import check_price_data
from usage import pricing
from usage.pricing import Overlay, Rates, TokenCounts, cost_nanos, genai_card, read_overlay

NOW = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)
SONNET_45 = "claude-sonnet-4-5-20250929"
OPUS_41 = "claude-opus-4-1-20250805"


def repeated_figures(overlay: Overlay) -> list[str]:
    """Each figure of ``overlay`` that genai-prices already gives, the same, for the
    entry's models on the day it takes effect: such an entry is no longer needed."""
    found = []
    for entry in overlay.entries:
        for model in (m for m in entry.models if not m.endswith("*")):
            card = genai_card(model, entry.start)
            if card is None:
                continue
            fast = card.fast_rates
            if entry.standard is not None and card.standard == entry.standard:
                found.append(f"{model}: standard rates")
            if entry.long_context is not None and card.long_context == entry.long_context:
                found.append(f"{model}: long-context tier")
            multiplier = entry.fast_multiplier
            if multiplier is not None and fast == card.standard.times(multiplier):
                found.append(f"{model}: fast mode")
            web = entry.web_search_per_thousand
            if web is not None and card.web_search_per_thousand == web:
                found.append(f"{model}: web search")
    return found


def test_genai_prices_gives_no_figure_our_overlay_repeats() -> None:
    repeated = repeated_figures(read_overlay(pricing.OVERLAY_PATH, label="overlay"))

    assert repeated == [], f"genai-prices now has these: drop them from the overlay: {repeated}"


def overlay_file(tmp_path: Path, body: str, version: str = "2027-01-02.1") -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(f'version = "{version}"\n\n{body}')
    return path


def test_the_test_above_notices_an_entry_genai_prices_already_has(tmp_path: Path) -> None:
    repeating = overlay_file(
        tmp_path,
        """
        [[price]]
        models = ["claude-sonnet-4-5"]
        from = 2025-10-01
        web_search_per_thousand = 10
        source = "a figure genai-prices has"
        """,
    )

    assert repeated_figures(read_overlay(repeating, label="x")) == ["claude-sonnet-4-5: web search"]


def test_every_entry_of_our_overlay_applies_to_a_model_genai_prices_knows() -> None:
    overlay = read_overlay(pricing.OVERLAY_PATH, label="overlay")

    assert overlay.entries
    for entry in overlay.entries:
        assert entry.source.startswith("https://"), entry
        assert all(genai_card(model, entry.start) is not None for model in entry.models)


@pytest.fixture
def operator_overlay(settings: SettingsWrapper, tmp_path: Path) -> Iterator[Path]:
    """An operator's overlay file, in force while the test runs (USAGE_PRICE_OVERLAY)."""
    path = tmp_path / "operator.toml"
    path.write_text('version = "empty"\n')
    settings.USAGE_PRICE_OVERLAY = str(path)
    yield path
    pricing.configure("")  # the settings fixture restores the setting, and this with it


def replace(path: Path, body: str, version: str = "2027-01-02.1") -> None:
    path.write_text(f'version = "{version}"\n\n{body}')
    pricing.configure(str(path))


def test_an_operators_overlay_wins_over_genai_prices_and_names_its_source(
    operator_overlay: Path,
) -> None:
    replace(
        operator_overlay,
        """
        [[price]]
        models = ["claude-opus-4-1"]
        from = 2026-01-01
        source = "our contract, clause 4"
        [price.standard]
        input = 12
        output = 60
        """,
    )

    card = pricing.rate_card(OPUS_41, NOW)

    assert card is not None
    # The cache rates follow Anthropic's multipliers of the input rate: 1.25x, 2x, 0.1x.
    assert card.standard == Rates(
        Decimal(12), Decimal(60), Decimal(15), Decimal(24), Decimal("1.2")
    )
    assert card.sources["standard"] == "operator overlay 2027-01-02.1: our contract, clause 4"
    # 1,000 input and 1,000 output tokens: 1,000 x 12,000 + 1,000 x 60,000 nanodollars.
    assert cost_nanos(OPUS_41, TokenCounts(1_000, 1_000, 0, 0, 0), NOW) == 72_000_000
    # Before the entry takes effect, genai-prices' $15 / $75.
    before = datetime(2025, 12, 31, 12, 0, tzinfo=UTC)
    assert cost_nanos(OPUS_41, TokenCounts(1_000, 1_000, 0, 0, 0), before) == 90_000_000


def test_the_latest_entry_in_force_wins_and_until_ends_one(operator_overlay: Path) -> None:
    replace(
        operator_overlay,
        """
        [[price]]
        models = ["claude-sonnet-4-5*"]
        from = 2026-01-01
        web_search_per_thousand = 8
        source = "first"

        [[price]]
        models = ["claude-sonnet-4-5*"]
        from = 2026-06-01
        until = 2026-07-01
        web_search_per_thousand = 5
        source = "a June promotion"
        """,
    )
    search = TokenCounts(0, 0, 0, 0, 0, web_search_requests=1)

    # $8 / 1,000 = 8,000,000 nanodollars a search; $5 / 1,000 in June; genai-prices' $10
    # before either.
    assert cost_nanos(SONNET_45, search, datetime(2026, 5, 31, tzinfo=UTC)) == 8_000_000
    assert cost_nanos(SONNET_45, search, datetime(2026, 6, 30, tzinfo=UTC)) == 5_000_000
    assert cost_nanos(SONNET_45, search, datetime(2026, 7, 1, tzinfo=UTC)) == 8_000_000
    assert cost_nanos(SONNET_45, search, datetime(2025, 12, 31, tzinfo=UTC)) == 10_000_000


def test_an_operator_can_price_a_model_genai_prices_does_not_know(operator_overlay: Path) -> None:
    unknown = TokenCounts(1_000, 1_000, 0, 0, 0)
    assert cost_nanos("claude-newest-7", unknown, NOW) is None

    replace(
        operator_overlay,
        """
        [[price]]
        models = ["claude-newest-7"]
        from = 2026-09-01
        source = "the launch post"
        standard = { input = 4, output = 20 }
        """,
    )

    assert cost_nanos("claude-newest-7", unknown, NOW) == 1_000 * 4_000 + 1_000 * 20_000


def test_the_price_data_names_every_layer_and_its_fingerprint_moves_with_any(
    operator_overlay: Path,
) -> None:
    before = pricing.price_data()
    replace(
        operator_overlay,
        """
        [[price]]
        models = ["claude-opus-4-1"]
        from = 2026-01-01
        fast_multiplier = 2
        source = "s"
        """,
    )
    after = pricing.price_data()

    assert after.fingerprint != before.fingerprint
    assert after.describe() == (
        f"genai-prices 0.2.3, overlay 2026-12-07.1, operator overlay 2027-01-02.1 "
        f"({operator_overlay}) (fingerprint {after.fingerprint})"
    )


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param("[[price]\n", "not TOML", id="not TOML"),
        pytest.param('[[price]]\nmodels = ["m"]\nfrom = 2026-01-01\n', "source", id="no source"),
        pytest.param(
            '[[price]]\nmodels = ["m"]\nfrom = 2026-01-01\nsource = "s"\n', "no price", id="empty"
        ),
        pytest.param(
            '[[price]]\nmodels = ["m"]\nfrom = "soon"\nsource = "s"\nfast_multiplier = 2\n',
            "dates",
            id="from not a date",
        ),
        pytest.param(
            '[[price]]\nmodels = ["m"]\nfrom = 2026-01-01\nsource = "s"\nfast_multiplier = -2\n',
            ">= 0",
            id="negative",
        ),
        pytest.param(
            '[[price]]\nmodels = ["m"]\nfrom = 2026-01-01\nsource = "s"\nspeedy = 2\n',
            "unknown keys speedy",
            id="unknown key",
        ),
        pytest.param(
            '[[price]]\nmodels = ["m"]\nfrom = 2026-01-01\nsource = "s"\n'
            "long_context = { input = 6, output = 22 }\n",
            "above",
            id="tier without a threshold",
        ),
    ],
)
def test_a_broken_operator_overlay_is_refused_at_start_with_one_line(
    operator_overlay: Path, body: str, problem: str
) -> None:
    operator_overlay.write_text(f'version = "1"\n{body}')
    pricing.configure(str(operator_overlay))

    [error] = check_price_data()

    assert error.msg.startswith(f"USAGE_PRICE_OVERLAY='{operator_overlay}': {operator_overlay}")
    assert problem in error.msg


def test_a_missing_operator_overlay_is_refused(settings: SettingsWrapper, tmp_path: Path) -> None:
    settings.USAGE_PRICE_OVERLAY = str(tmp_path / "nowhere.toml")
    try:
        [error] = check_price_data()
    finally:
        pricing.configure("")

    assert "cannot read it" in error.msg


def test_without_an_operator_overlay_the_price_data_reads() -> None:
    assert check_price_data() == []
    assert pricing.price_data().overlays[0].version == "2026-12-07.1"


def test_an_entry_takes_effect_on_its_day_in_utc() -> None:
    # Sonnet 4's long-context tier, from 2025-08-12: a 300,000-token input the day before
    # pays the standard $3, from that day the whole request pays $6.
    big = TokenCounts(300_000, 0, 0, 0, 0)
    day_before = datetime(2025, 8, 11, 23, 59, tzinfo=UTC)
    assert cost_nanos("claude-sonnet-4-20250514", big, day_before) == 300_000 * 3_000
    first_day = datetime.combine(date(2025, 8, 12), datetime.min.time(), tzinfo=UTC)
    assert cost_nanos("claude-sonnet-4-20250514", big, first_day) == 300_000 * 6_000
