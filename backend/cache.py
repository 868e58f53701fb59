"""Django's cache on the shared Redis (``REDIS_URL``), so that every daphne process counts
the same rate limits, plus the one operation those counts need.

Keys live under ``USAGE_REDIS_PREFIX`` (``cu:cache:1:...``), read when a key is made rather
than when the cache is built: the tests give each test a prefix of its own, and the keys of
one deployment never meet another's that shares the Redis.

On a Redis Cluster (``redis+cluster://``) the cache talks to it through a ``RedisCluster``
client: each key goes to the master of its slot. Every operation the counters use touches
one key; the cache's own multi-key ones (``get_many``, ``set_many``) are split by slot.
"""

from __future__ import annotations

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


UNCOUNT = "if redis.call('GET', KEYS[1]) then return redis.call('DECR', KEYS[1]) end return 0"


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
    """Django's Redis cache with a counter of one round trip (``usage.api.throttles``)."""

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

    def uncount(self, key: str) -> None:
        """Take one back from the counter ``key`` (``usage.api.throttles.ReleaseInFlight``)."""
        full_key = self.make_and_validate_key(key)
        # Not below zero: a counter that expired while its request ran is not recreated.
        self._cache.get_client(full_key, write=True).eval(UNCOUNT, 1, full_key)
