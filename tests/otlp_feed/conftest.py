from __future__ import annotations

import pytest

from tests.conftest import Clock


@pytest.fixture
def otlp_clock(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The one clock of the API's views and of the OpenTelemetry feed's."""
    monkeypatch.setattr("otlp_feed.views._now", clock)
    return clock
