"""usage.outage: once PostgreSQL failed, one request at a time finds out whether it is back,
at most every PROBE_SECONDS; the others skip the database. SQLite never goes down this way."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from django.db import OperationalError, connection, transaction
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from tests.support import free_port
from usage import outage

ON_POSTGRES = connection.vendor == "postgresql"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    fake = Clock()
    original = outage._state.clock
    outage._state.clock = fake
    yield fake
    outage._state.clock = original
    outage.succeeded()


DOWN = OperationalError("connection refused")


@pytest.mark.postgres_only
def test_after_a_failure_the_database_is_skipped_until_the_next_probe(clock: Clock) -> None:
    assert not outage.skip()
    outage.failed(DOWN)

    assert outage.skip()
    clock.now += outage.PROBE_SECONDS - 0.01
    assert outage.skip()
    clock.now += 0.01
    assert not outage.skip()  # this request tries it
    assert outage.skip()  # and meanwhile nobody else


@pytest.mark.postgres_only
def test_a_probe_that_failed_waits_again_and_one_that_succeeded_ends_the_outage(
    clock: Clock,
) -> None:
    outage.failed(DOWN)
    clock.now += outage.PROBE_SECONDS
    assert not outage.skip()
    outage.failed(DOWN)
    assert outage.skip()

    clock.now += outage.PROBE_SECONDS
    assert not outage.skip()
    outage.succeeded()
    assert not outage.skip()
    assert not outage.skip()


@pytest.mark.postgres_only
def test_a_probe_that_ended_otherwise_lets_the_next_request_try(clock: Clock) -> None:
    outage.failed(DOWN)
    clock.now += outage.PROBE_SECONDS
    assert not outage.skip()
    outage.released()
    assert not outage.skip()


@pytest.mark.postgres_only
def test_an_optional_step_answers_otherwise_while_the_database_is_down(clock: Clock) -> None:
    def step() -> str:
        raise OperationalError("connection refused")

    assert outage.optional(step, "from redis") == "from redis"
    assert outage.optional(lambda: "from the database", "from redis") == "from redis"
    clock.now += outage.PROBE_SECONDS
    assert outage.optional(lambda: "from the database", "from redis") == "from the database"


@pytest.mark.skipif(ON_POSTGRES, reason="the SQLite rule")
def test_an_error_of_sqlite_fails_its_own_request_only(clock: Clock) -> None:
    outage.failed(OperationalError("database is locked"))
    assert not outage.skip()


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_an_error_postgresql_answered_fails_its_own_request_only(clock: Clock) -> None:
    """A lock timeout: the server is there, and answered."""
    holder = psycopg.connect(_conninfo())
    holder.execute("LOCK TABLE usage_event IN ACCESS EXCLUSIVE MODE")
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '10ms'")
            with pytest.raises(OperationalError) as raised:
                cursor.execute("LOCK TABLE usage_event IN EXCLUSIVE MODE")
    finally:
        holder.rollback()
        holder.close()
    outage.failed(raised.value)
    assert not outage.skip()


@pytest.mark.postgres_only
def test_a_connection_that_cannot_be_made_is_an_outage(clock: Clock) -> None:
    try:
        psycopg.connect(_conninfo(port=free_port()))
    except psycopg.OperationalError as refused:
        error = OperationalError(str(refused))
        error.__cause__ = refused  # as Django wraps it
    outage.failed(error)
    assert outage.skip()


def _pool_timeout(pool: ConnectionPool) -> OperationalError:
    """What Django raises when a request waited the pool's timeout for a connection."""
    try:
        pool.getconn(timeout=0.2)
    except PoolTimeout as timed_out:
        error = OperationalError(str(timed_out))
        error.__cause__ = timed_out  # as Django wraps it
        return error
    raise AssertionError("the pool had a connection to give")


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_wait_for_a_connection_while_all_of_them_are_busy_fails_its_own_request_only(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under load every connection of the pool is in use: the database answers them all, and
    # one request that waited too long must not make the process refuse every write.
    with ConnectionPool(_conninfo(), min_size=2, max_size=2, open=True) as pool:
        pool.wait()
        busy = [pool.getconn(), pool.getconn()]
        monkeypatch.setattr(outage, "_pool", lambda: pool, raising=False)
        outage.failed(_pool_timeout(pool))
        for held in busy:
            pool.putconn(held)
    assert not outage.skip()


@pytest.mark.postgres_only
def test_a_wait_for_a_connection_the_pool_cannot_make_is_an_outage(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    unreachable = _conninfo(port=free_port())
    with ConnectionPool(unreachable, min_size=1, max_size=2, open=False) as pool:
        pool.open(wait=False)
        monkeypatch.setattr(outage, "_pool", lambda: pool, raising=False)
        outage.failed(_pool_timeout(pool))
    assert outage.skip()


def _conninfo(**overrides: object) -> str:
    given = connection.settings_dict
    settings = {
        "host": given["HOST"] or "127.0.0.1",
        "port": given["PORT"] or 5432,
        "user": given["USER"],
        "password": given["PASSWORD"] or None,
        "dbname": given["NAME"],
    }
    return make_conninfo(**(settings | overrides))
