"""The settings mypy's Django plugin loads (``[tool.django-stubs]`` in pyproject.toml).

The plugin imports the settings, and mypy ends with ``os._exit``, so no exit handler runs:
with the embedded default every type check started a redis-server that nothing stopped
(``backend/embedded_redis.py``). Type checking connects to nothing, so unless ``REDIS_URL``
is set, a URL that is never used stands in and no server starts.
"""

import os

os.environ.setdefault("REDIS_URL", "redis://type-checking-only.invalid:6379/0")

from backend.settings import *  # noqa: F403
