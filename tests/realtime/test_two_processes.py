"""End to end across processes: two real daphne servers share one database and one Redis,
and a dashboard connected to the first sees what an agent ingests through the second.

The database is a temporary SQLite file, or, when DATABASE_URL points at PostgreSQL, a
database of its own created and dropped here. Redis is the test run's own (REDIS_URL, or
the embedded server this process started), under this test's key prefix. The periodic
resync is switched off, so the update must cross between the processes as a prompt.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import psycopg
import pytest
from psycopg import sql
from pytest_django.fixtures import Settings
from websockets.asyncio.client import connect

from tests.support import API, ServerProcess, manage

pytestmark = [pytest.mark.slow]

TIMEOUT = 30.0  # generous: a bound on waiting, never an expectation of speed


@dataclass(frozen=True)
class Deployment:
    first: ServerProcess
    second: ServerProcess
    token: str


# --- the deployment ----------------------------------------------------------------------


@contextmanager
def shared_database(tmp_path: Path) -> Iterator[str]:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        yield f"sqlite:///{tmp_path / 'db.sqlite3'}"
        return
    name = f"usage_e2e_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    server = urlsplit(url)._replace(path="/postgres").geturl()
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlsplit(url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def deployment(tmp_path: Path, settings: Settings) -> Iterator[Deployment]:
    with shared_database(tmp_path) as database_url:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "backend.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": settings.REDIS_URL,
            # the conftest's per-test prefix: its teardown drops what the servers built
            "USAGE_REDIS_PREFIX": settings.USAGE_REDIS_PREFIX,
            "USAGE_VAR_DIR": str(tmp_path / "var"),
            "LOG_LEVEL": "WARNING",
            # No resync within the test: the update can only come as a channel-layer
            # prompt that crossed from the second process to the first through Redis.
            "USAGE_WS_RESYNC_SECONDS": "3600",
        }
        manage(env, "migrate", "--noinput", "-v0")
        token = manage(env, "create_token", "e2e").strip()
        servers = [ServerProcess(env, tmp_path / f"daphne-{name}.log") for name in ("1", "2")]
        try:
            for server in servers:
                server.launch()  # side by side: both start up at once
            for server in servers:
                server.wait_ready()
            yield Deployment(first=servers[0], second=servers[1], token=token)
        finally:
            for server in servers:
                server.stop()


# --- the test ----------------------------------------------------------------------------


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


def _records(now: datetime) -> bytes:
    lines = [
        {
            "type": "assistant",
            "timestamp": (now - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"),
            "sessionId": "e2e-session",
            "cwd": "/home/dev/e2e",
            "requestId": f"req_e2e_{minutes}",
            "message": {
                "id": f"msg_e2e_{minutes}",
                "model": "claude-sonnet-4-20250514",
                "usage": {"input_tokens": 1000 * minutes, "output_tokens": 10 * minutes},
            },
        }
        for minutes in (3, 2)
    ]
    return b"\n".join(orjson.dumps(line) for line in lines)


async def _frames_until_position(socket: Any, position: int) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + TIMEOUT
    while not frames or frames[-1].get("position", -1) < position:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no frame reached position {position}; got {frames}"
        frames.append(orjson.loads(await asyncio.wait_for(socket.recv(), remaining)))
    return frames


async def test_a_dashboard_on_one_process_sees_an_ingest_through_another(
    deployment: Deployment,
) -> None:
    first, second, token = deployment.first, deployment.second, deployment.token
    url = f"ws://127.0.0.1:{first.port}/ws/claude-usage/?token={token}"
    async with (
        connect(url, open_timeout=TIMEOUT) as dashboard,
        httpx.AsyncClient(base_url=second.url, headers=_auth(token), timeout=TIMEOUT) as agent,
    ):
        snapshot = orjson.loads(await asyncio.wait_for(dashboard.recv(), TIMEOUT))

        answer = await agent.post(
            f"{API}events/",
            content=_records(datetime.now(tz=UTC)),
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert answer.status_code == 200, answer.text
        frames = await _frames_until_position(dashboard, answer.json()["position"])
        rest = (await agent.get(f"{API}dashboard/")).json()

    assert snapshot["type"] == "dashboard"
    assert snapshot["summary"]["total_messages"] == 0
    assert answer.json()["accepted"] == 2
    assert frames[-1]["type"] == "dashboard"
    assert frames[-1]["summary"] == rest["summary"]
    assert frames[-1]["summary"]["total_tokens"] == 3000 + 30 + 2000 + 20
    assert frames[-1]["model_distribution"] == rest["model_distribution"]
