"""What a read may ask for: no more hours than retention keeps (720 when it keeps everything),
no timeseries of more than 8,640 intervals, and a schema generated once per process."""

from __future__ import annotations

from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from tests.conftest import Clock

pytestmark = [pytest.mark.django_db]

API = "/app/claude-usage/"


def get(client: APIClient, path: str, query: str) -> Any:
    return client.get(f"{API}{path}?{query}")


def assert_validation_error(response: Any, *words: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "VALIDATION_ERROR"
    for word in words:
        assert word in body["error"]["message"]


@pytest.mark.parametrize("path", ["dashboard/", "timeseries/"])
def test_hours_beyond_what_retention_keeps_are_a_clear_400(
    api: APIClient, clock: Clock, settings: Settings, path: str
) -> None:
    settings.USAGE_RETENTION_HOURS = 6

    within = get(api, path, "hours=6")
    beyond = get(api, path, "hours=6.5")

    assert within.status_code == 200
    assert_validation_error(beyond, "hours", "6", "USAGE_RETENTION_HOURS")


@pytest.mark.parametrize("path", ["dashboard/", "timeseries/?interval=1hour&"])
def test_without_retention_hours_stop_at_30_days(
    api: APIClient, clock: Clock, settings: Settings, path: str
) -> None:
    settings.USAGE_RETENTION_HOURS = 0
    separator = "" if path.endswith("&") else "?"
    base = path if separator == "" else path + separator

    within = api.get(f"{API}{base}hours=720")
    beyond = api.get(f"{API}{base}hours=721")

    assert within.status_code == 200
    assert_validation_error(beyond, "hours", "720")


def test_a_long_retention_allows_as_many_hours_as_it_keeps(
    api: APIClient, clock: Clock, settings: Settings
) -> None:
    settings.USAGE_RETENTION_HOURS = 24 * 365

    assert get(api, "dashboard/", "hours=2000").status_code == 200


def test_a_timeseries_of_more_than_8640_intervals_is_a_400(
    api: APIClient, clock: Clock, settings: Settings
) -> None:
    settings.USAGE_RETENTION_HOURS = 0

    at_the_cap = get(api, "timeseries/", "hours=144&interval=1min")  # 8,640 minutes
    over_it = get(api, "timeseries/", "hours=144.1&interval=1min")
    longer_steps = get(api, "timeseries/", "hours=720&interval=5min")  # 8,640 again

    assert at_the_cap.status_code == 200
    assert len(at_the_cap.json()["data_points"]) <= 8641  # and the bucket now is in
    assert_validation_error(over_it, "8640", "interval")
    assert longer_steps.status_code == 200


def test_a_configure_beyond_retention_is_refused_like_a_rest_read(settings: Settings) -> None:
    from usage.api.serializers import DashboardParams

    settings.USAGE_RETENTION_HOURS = 6
    params = DashboardParams(data={"hours": 7})

    assert not params.is_valid()
    assert "USAGE_RETENTION_HOURS" in str(params.errors["hours"])


def test_the_schema_is_generated_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    generated: list[object] = []
    real = SchemaGenerator.get_schema

    def counting(self: SchemaGenerator, *args: Any, **kwargs: Any) -> Any:
        generated.append(self)
        return real(self, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(SchemaGenerator, "get_schema", counting)
    from usage.api.urls import SchemaView

    SchemaView.forget()  # as if the process had just started
    anonymous = APIClient()

    yaml = anonymous.get(f"{API}schema/")
    first = anonymous.get(f"{API}schema/?format=json")
    again = anonymous.get(f"{API}schema/?format=json")

    assert (yaml.status_code, first.status_code, again.status_code) == (200, 200, 200)
    assert first.json() == again.json()
    assert f"{API}events/" in first.json()["paths"]
    assert len(generated) == 1


def test_an_error_from_the_schema_endpoint_is_a_json_envelope(settings: Settings) -> None:
    settings.USAGE_THROTTLE_ANONYMOUS_PER_MINUTE = 1
    anonymous = APIClient()
    anonymous.get(f"{API}schema/")

    refused = anonymous.get(f"{API}schema/")

    assert refused.status_code == 429
    assert refused["Content-Type"].startswith("application/json")
    assert refused.json()["error"]["code"] == "RATE_LIMITED"
