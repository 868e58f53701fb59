"""Django's cache on the shared Redis (``REDIS_URL``), so that every daphne process counts
the same rate limits, plus the operations those counts need (a counter, leased slots).

Keys live under ``USAGE_REDIS_PREFIX`` (``cu:cache:1:...``), read when a key is made rather
than when the cache is built: the tests give each test a prefix of its own, and the keys of
one deployment never meet another's that shares the Redis.

On a Redis Cluster (``redis+cluster://``) the cache talks to it through a ``RedisCluster``
client: each key goes to the master of its slot. Every operation the counters use touches
one key; the cache's own multi-key ones (``get_many``, ``set_many``) are split by slot.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.cache.backends.redis import RedisCache, RedisCacheClient, RedisSerializer

from usage.projection import redis_address, redis_store


def key_function(key: str, key_prefix: str, version: int | str) -> str:
    """Django's KEY_FUNCTION: ``<USAGE_REDIS_PREFIX>:cache:<version>:<key>`` (KEY_PREFIX is
    not used: the Redis prefix is the one namespace)."""
    return f"{settings.USAGE_REDIS_PREFIX}:cache:{version}:{key}"


# A sorted set of slots (member: the slot's id, score: when its lease ends, in Redis's own
# milliseconds). Leases that ended are dropped first; then a slot is taken if fewer than the
# limit are left. A refused try writes nothing, so it keeps no dead slot alive.
TAKE_SLOT = """
redis.replicate_commands()
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


class ClusterCacheClient(RedisCacheClient):
    """Django's Redis cache client on a Redis Cluster (one URL: ``redis+cluster://...``)."""

    # Set by RedisCacheClient (django-stubs leave its private attributes out).
    _servers: list[str]
    _serializer: RedisSerializer

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        return _cluster_client(self._servers[0])

    def get_many(self, keys: Any) -> dict[Any, Any]:
        values = self.get_client().mget_nonatomic(keys)  # one MGET per slot
        loads = self._serializer.loads
        found = zip(keys, values, strict=True)
        return {key: loads(value) for key, value in found if value is not None}

    def set_many(self, data: Mapping[Any, Any], timeout: Any) -> None:
        if timeout == 0:  # Django's "expired at once"
            self.delete_many(list(data))
            return
        with self.get_client().pipeline(transaction=False) as pipeline:  # grouped by node
            for key, value in data.items():
                pipeline.set(key, self._serializer.dumps(value), ex=timeout)
            pipeline.execute()


@lru_cache(maxsize=4)
def _cluster_client(url: str) -> Any:
    # One per process and URL (a RedisCluster keeps a pool per node, and is thread-safe).
    return redis_store.connect(url)


class CountingRedisCache(RedisCache):
    """Django's Redis cache with a counter and leased slots, one round trip each
    (``usage.api.throttles``)."""

    _servers: list[str]  # set by RedisCache (django-stubs leave it out)

    def __init__(self, server: str | list[str], params: dict[str, Any]) -> None:
        super().__init__(server, params)
        if len(self._servers) == 1 and redis_address.parse(self._servers[0]).cluster:
            self._class = ClusterCacheClient

    def count(self, key: str, *, expires_in: int) -> int:
        """Add one to the counter ``key`` and return its new value. The counter (re)expires
        ``expires_in`` seconds after this count: with the window in the key, it only has to
        outlive its window. INCR and EXPIRE go out in one pipeline (one round trip); EXPIRE
        NX would need Redis 7, and the embedded server is 6.2."""
        full_key = self.make_and_validate_key(key)
        client: Any = self._cache.get_client(full_key, write=True)
        with client.pipeline(transaction=False) as pipeline:
            pipeline.incr(full_key)
            pipeline.expire(full_key, expires_in)
            value, _ = pipeline.execute()
        return int(value)

    def take_slot(self, key: str, *, limit: int, lease_seconds: float) -> str | None:
        """One of at most ``limit`` slots of ``key``, held until ``give_back`` or until its
        lease ends (a process that died holding it), whichever comes first; None when all
        are taken. Returns the slot's id. One round trip."""
        full_key = self.make_and_validate_key(key)
        slot = secrets.token_hex(8)
        lease_ms = max(1, int(lease_seconds * 1000))
        client: Any = self._cache.get_client(full_key, write=True)
        taken = client.eval(TAKE_SLOT, 1, full_key, limit, lease_ms, slot)
        return slot if taken else None

    def give_back(self, key: str, slot: str) -> None:
        self._cache.get_client(key, write=True).zrem(self.make_and_validate_key(key), slot)

    def slots_taken(self, key: str) -> int:
        """How many slots of ``key`` are held, lapsed leases included until the next take."""
        full_key = self.make_and_validate_key(key)
        return int(self._cache.get_client(full_key).zcard(full_key))
