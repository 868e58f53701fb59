"""Every key of a user's projection with its value: how the tests compare two projections."""

from __future__ import annotations

from usage.projection import redis_store

Dump = dict[str, dict[str, str] | str | list[str] | set[str]]


def dump_projection(user_id: int) -> Dump:
    """Each key of the user's projection (its name after the user's prefix) with its value;
    sorted sets as ``member@score`` in score order. Not the ``epoch``: which build of the
    projection it is, new at every rebuild, says nothing of what it holds."""
    client = redis_store.client()
    prefix = redis_store.user_prefix(user_id)
    out: Dump = {}
    for key in sorted(client.scan_iter(match=redis_store.glob_escape(prefix) + "*", count=1000)):
        kind = client.type(key)
        name = key[len(prefix) :]
        if name == "epoch":
            continue
        if kind == "hash":
            out[name] = client.hgetall(key)
        elif kind == "set":
            out[name] = client.smembers(key)
        elif kind == "zset":
            out[name] = [f"{m}@{int(s)}" for m, s in client.zrange(key, 0, -1, withscores=True)]
        else:
            out[name] = client.get(key) or ""
    return out
