"""On a Redis Cluster (``REDIS_URL=redis+cluster://...``): what the other tests cannot tell
from one server. Each user's keys live on the master of the user's slot, and what spans users
reaches every master: the SCAN for projected users, the checkpoints' pipeline, the cache's
keys, the readiness probe and the channel layer's groups.

``tests/test_redis_cluster.py`` runs this module (with the projection and WebSocket tests) on
a cluster of three masters of its own; on one server these tests skip, but the last one.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.cache import caches
from pytest_django.fixtures import Settings
from redis.crc import key_slot

from backend.cache import ClusterCacheClient
from tests.support import free_port
from usage import services
from usage.notify import user_group
from usage.projection import redis_address, redis_store

NOW = datetime(2025, 10, 5, 22, 0, tzinfo=UTC)
MOST_USERS = 64  # three masters are all reached long before: each user's slot is a hash
TIMEOUT = 10.0  # a bound on waiting, never an expectation of speed


@pytest.fixture
def cluster() -> Any:
    """The cluster's client; the test skips unless ``REDIS_URL`` names a cluster."""
    if not redis_address.parse(django_settings.REDIS_URL).cluster:
        pytest.skip("needs REDIS_URL=redis+cluster://... (tests/test_redis_cluster.py runs it)")
    return redis_store.client()


def master_of(cluster: Any, user_id: int) -> str:
    return str(cluster.get_node_from_key(redis_store.user_prefix(user_id)).name)


@pytest.fixture
def users_on_every_master(cluster: Any, settings: Settings) -> dict[int, str]:
    """Users (id -> the master of their slot) until every master holds one, each with a
    projection of a few events."""
    settings.USAGE_RETENTION_HOURS = 0
    masters = {node.name for node in cluster.get_primaries()}
    placed: dict[int, str] = {}
    while set(placed.values()) != masters and len(placed) < MOST_USERS:
        user = get_user_model().objects.create(username=f"placed{len(placed)}")
        placed[user.pk] = master_of(cluster, user.pk)
    assert set(placed.values()) == masters
    for user_id in placed:
        services.ingest_records(user_id=user_id, records=lines(user_id), host="laptop", now=NOW)
    return placed


def lines(user_id: int) -> list[dict[str, object]]:
    return [
        {
            "timestamp": (NOW - timedelta(minutes=10 * number)).isoformat(),
            "sessionId": f"session-{number % 2}",
            "cwd": f"/home/user{user_id}/project",
            "requestId": f"req_{user_id}_{number}",
            "message": {
                "id": f"msg_{user_id}_{number}",
                "model": "claude-sonnet-4-5-20250929",
                "usage": {"input_tokens": 100 + number, "output_tokens": 10},
            },
        }
        for number in range(5)
    ]


@pytest.mark.django_db(transaction=True)
def test_each_users_keys_are_on_the_master_of_the_users_slot(
    cluster: Any, users_on_every_master: dict[int, str], settings: Settings
) -> None:
    pattern = redis_store.glob_escape(settings.USAGE_REDIS_PREFIX) + ":*"
    for node in cluster.get_primaries():
        keys = list(cluster.scan_iter(match=pattern, count=1000, target_nodes=node))
        owners = {int(key.split("{u:", 1)[1].split("}", 1)[0]) for key in keys}

        assert owners == {user for user, name in users_on_every_master.items() if name == node.name}
        assert {key_slot(key.encode()) for key in keys} == {
            key_slot(redis_store.user_prefix(user).encode()) for user in owners
        }


@pytest.mark.django_db(transaction=True)
def test_the_projected_users_and_their_checkpoints_are_read_from_every_master(
    cluster: Any, users_on_every_master: dict[int, str]
) -> None:
    users = sorted(users_on_every_master)

    assert redis_store.projected_user_ids() == users
    checkpoints = redis_store.checkpoints(users)  # one pipeline across the slots
    assert sorted(checkpoints) == users
    assert all(checkpoint.position > 0 for checkpoint in checkpoints.values())


@pytest.mark.django_db(transaction=True)
def test_a_drop_removes_a_users_keys_and_leaves_the_others_on_every_master(
    cluster: Any, users_on_every_master: dict[int, str]
) -> None:
    dropped, *kept = sorted(users_on_every_master)

    with redis_store.rebuild_lock(dropped):
        redis_store.drop_user(dropped, earlier_layouts=True)

    assert redis_store.projected_user_ids() == kept
    assert list(cluster.scan_iter(match=redis_store.user_prefix(dropped) + "*")) == []


@pytest.mark.usefixtures("cluster")
def test_the_cache_counts_leases_and_reads_keys_of_every_slot() -> None:
    cache: Any = caches["default"]
    assert isinstance(cache._cache, ClusterCacheClient)
    keys = [f"spread{number}" for number in range(30)]  # about ten slots per master

    cache.set_many({key: number for number, key in enumerate(keys)}, timeout=60)
    assert cache.get_many(keys) == {key: number for number, key in enumerate(keys)}
    # The counters count on from what is stored: 0, 1 and 2.
    assert [cache.count(key, expires_in=60) for key in keys[:3]] == [1, 2, 3]
    slot = cache.take_slot("leases", limit=1, lease_seconds=60)
    assert cache.take_slot("leases", limit=1, lease_seconds=60) is None
    cache.give_back("leases", slot)
    assert cache.slots_taken("leases") == 0
    cache.delete_many(keys)
    assert cache.get_many(keys) == {}


@pytest.mark.usefixtures("cluster")
def test_readiness_asks_every_master(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Any] = []
    probe = redis_store._probe_client(django_settings.REDIS_URL)
    real_ping = probe.ping

    def ping(**options: Any) -> Any:
        asked.append(options)
        return real_ping(**options)

    monkeypatch.setattr(probe, "ping", ping)

    redis_store.ping()

    assert asked == [{"target_nodes": redis.RedisCluster.PRIMARIES}]


@pytest.mark.usefixtures("cluster", "isolated_channel_layer")
async def test_a_prompt_published_on_any_node_reaches_a_group_subscribed_on_another() -> None:
    """The layer hashes each group to one of the nodes listed; the cluster forwards every
    PUBLISH to every node, so even a process listing the nodes in another order (here: the
    reverse) reaches the subscribers."""
    listening = get_channel_layer()
    layers: dict[str, dict[str, Any]] = django_settings.CHANNEL_LAYERS
    config = layers["default"]["CONFIG"]
    assert config["hosts"] == redis_address.node_urls(django_settings.REDIS_URL)
    assert len(config["hosts"]) == 3
    sending = RedisPubSubChannelLayer(hosts=config["hosts"][::-1], prefix=config["prefix"])
    try:
        channels = {}
        for user_id in range(1, 7):
            channels[user_id] = await listening.new_channel()
            await listening.group_add(user_group(user_id), channels[user_id])
        for user_id in channels:
            await sending.group_send(user_group(user_id), {"type": "usage.changed", "n": user_id})
        for user_id, channel in channels.items():
            message = await _within(listening.receive(channel))
            assert message == {"type": "usage.changed", "n": user_id}
    finally:
        await sending.flush()


async def _within(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, TIMEOUT)


def test_a_cluster_that_cannot_be_reached_is_unavailable_not_an_error() -> None:
    """Answered 503 PROJECTIONS_UNAVAILABLE with Retry-After, as a single server that is
    down is (usage.api.errors): not a 500."""
    nobody = f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"

    with pytest.raises(redis_store.UNAVAILABLE):
        redis_store.connect(nobody, socket_connect_timeout=1).get("cp")
