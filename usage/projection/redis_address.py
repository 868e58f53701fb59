"""What ``REDIS_URL`` names: one Redis server, or the nodes of a Redis Cluster.

    redis://[[user]:password@]host:port/DB        one server (rediss:// over TLS, unix://)
    redis+cluster://[[user]:password@]host:port,host:port,...[/0][?option=value&...]
    rediss+cluster://...                          a cluster over TLS

A cluster URL lists its nodes (its masters, so that the channel layer spreads over them:
``backend/settings.py``), each ``host:port`` (6379 when left out, ``[::1]:7000`` for IPv6),
with the credentials and options every node shares. A cluster has only database 0.

Pure (the standard library only): the settings derive the channel layer's hosts from it as
they load, without connecting to anything. ``redis_store.connect`` builds the clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

# The cluster schemes and the plain scheme of each of their nodes.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
DEFAULT_PORT = 6379
EXAMPLE = "redis+cluster://host:port,host:port,..."


@dataclass(frozen=True)
class RedisAddress:
    """``node_urls``: one plain URL per node (the URL itself for one server); ``nodes``:
    the cluster's (host, port) seeds, in the order given (none for one server)."""

    cluster: bool
    node_urls: tuple[str, ...]
    nodes: tuple[tuple[str, int], ...] = ()


def parse(url: str) -> RedisAddress:
    """Raises ``ValueError`` for a cluster URL that does not read; any other URL is one
    server's, and redis-py judges it."""
    scheme, _, _ = url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme.lower())
    if plain is None:
        return RedisAddress(cluster=False, node_urls=(url,))
    parts = urlsplit(url)
    if parts.path not in ("", "/", "/0") or parts.fragment:
        raise ValueError(f"a Redis Cluster has only database 0, and no fragment: {url!r}")
    credentials, _, hosts = parts.netloc.rpartition("@")
    login = f"{credentials}@" if credentials else ""
    query = f"?{parts.query}" if parts.query else ""
    seeds = [_node(text, url) for text in hosts.split(",")]
    return RedisAddress(
        cluster=True,
        node_urls=tuple(f"{plain}://{login}{text}/0{query}" for text, _ in seeds),
        nodes=tuple(node for _, node in seeds),
    )


def _node(text: str, url: str) -> tuple[str, tuple[str, int]]:
    """A ``host:port`` of the list: its text (kept for the node's URL) and (host, port)."""
    node: SplitResult = urlsplit(f"//{text}")
    try:
        port = node.port or DEFAULT_PORT  # urlsplit refuses a port that is not one
    except ValueError:
        raise ValueError(f"not a host:port in {url!r}: {text!r}") from None
    if not node.hostname or node.netloc != text or "@" in text:
        raise ValueError(f"not a host:port in {url!r}: {text!r} (expected {EXAMPLE})")
    return text, (node.hostname, port)


def node_urls(url: str) -> list[str]:
    """One URL per node, for the channel layer's hosts; ``[url]`` for a URL that does not
    read (the system checks report it before anything serves: ``backend/checks.py``)."""
    try:
        return list(parse(url).node_urls)
    except ValueError:
        return [url]
