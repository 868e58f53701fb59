"""``/metrics`` of real servers: ``python -m backend.serve --workers 2`` sums what both
workers counted, whichever of them answers the scrape; a daphne started on its own serves
its own counts."""

from __future__ import annotations

import http.client
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from prometheus_client import multiprocess

from tests.operations.scrape import value
from tests.support import API, ServerProcess, manage, own_server
from tests.usage.test_ingest_api import line

pytestmark = [pytest.mark.slow]

ACCEPTED = "claude_usage_ingested_records_total"
CLIENTS = 8
ROUNDS = 10  # of CLIENTS requests each, at most, until both workers have served some
TIMEOUT = 60.0  # a bound on waiting, never an expectation of speed


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[ServerProcess]:
    with own_server(tmp_path, "opsmetrics", workers=2) as server:
        yield server


@pytest.fixture
def lone_daphne(tmp_path: Path) -> Iterator[ServerProcess]:
    with own_server(tmp_path, "opsmetrics") as server:
        yield server


def request(
    server: ServerProcess, method: str, path: str, body: bytes = b"", token: str = ""
) -> tuple[int, bytes]:
    """One request on a connection of its own: the workers take turns by connection."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    try:
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def ingest_one(server: ServerProcess, token: str) -> None:
    at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    record = line(f"msg_{uuid.uuid4().hex}", f"req_{uuid.uuid4().hex}", at=at)
    status, body = request(
        server, "POST", f"{API}events/", orjson.dumps({"records": [record]}), token
    )
    assert (status, orjson.loads(body)["accepted"]) == (200, 1), body


def scrape(server: ServerProcess) -> str:
    status, body = request(server, "GET", "/metrics")
    assert status == 200, body
    return body.decode()


def accepted_by_process(directory: Path) -> dict[str, float]:
    """Per pid, the accepted records its counter file holds."""
    counted = {}
    for path in directory.glob("counter_*.db"):
        merged = multiprocess.MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
        counted[path.stem.removeprefix("counter_")] = sum(
            sample.value
            for family in merged
            for sample in family.samples
            if sample.name == ACCEPTED and sample.labels == {"outcome": "accepted"}
        )
    return counted


def test_two_workers_sum_their_counts_in_every_scrape(two_workers: ServerProcess) -> None:
    token = manage(two_workers.env, "create_token", "alice").strip()
    directory = Path(two_workers.env["USAGE_VAR_DIR"]) / "metrics" / str(two_workers.pid)
    sent = 0
    with ThreadPoolExecutor(CLIENTS) as pool:
        for _ in range(ROUNDS):
            list(pool.map(lambda _: ingest_one(two_workers, token), range(CLIENTS)))
            sent += CLIENTS
            if sum(1 for count in accepted_by_process(directory).values() if count) >= 2:
                break
        scrapes = list(pool.map(lambda _: scrape(two_workers), range(CLIENTS)))

    by_process = accepted_by_process(directory)
    assert sum(1 for count in by_process.values() if count) == 2, by_process
    assert sum(by_process.values()) == sent
    assert {value(text, ACCEPTED, outcome="accepted") for text in scrapes} == {sent}


def test_the_launcher_removes_its_metrics_directory_when_it_stops(
    two_workers: ServerProcess,
) -> None:
    directory = Path(two_workers.env["USAGE_VAR_DIR"]) / "metrics" / str(two_workers.pid)
    assert directory.is_dir()

    two_workers.stop()

    assert not directory.exists()


def test_a_daphne_on_its_own_serves_its_own_counts(lone_daphne: ServerProcess) -> None:
    token = manage(lone_daphne.env, "create_token", "alice").strip()
    for _ in range(3):
        ingest_one(lone_daphne, token)

    text = scrape(lone_daphne)

    assert value(text, ACCEPTED, outcome="accepted") == 3
    assert "process_cpu_seconds_total" in text  # the single-process registry's own figures
