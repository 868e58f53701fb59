"""Django's cache on the shared Redis (``REDIS_URL``), so that every daphne process counts
the same rate limits, plus the one operation those counts need.

Keys live under ``USAGE_REDIS_PREFIX`` (``cu:cache:1:...``), read when a key is made rather
than when the cache is built: the tests give each test a prefix of its own, and the keys of
one deployment never meet another's that shares the Redis.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.cache.backends.redis import RedisCache


def key_function(key: str, key_prefix: str, version: int | str) -> str:
    """Django's KEY_FUNCTION: ``<USAGE_REDIS_PREFIX>:cache:<version>:<key>`` (KEY_PREFIX is
    not used: the Redis prefix is the one namespace)."""
    return f"{settings.USAGE_REDIS_PREFIX}:cache:{version}:{key}"


UNCOUNT = "if redis.call('GET', KEYS[1]) then return redis.call('DECR', KEYS[1]) end return 0"


class CountingRedisCache(RedisCache):
    """Django's Redis cache with a counter of one round trip (``usage.api.throttles``)."""

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
