"""What ``REDIS_URL`` names: one server, or a Redis Cluster's nodes (``redis+cluster://``)."""

from __future__ import annotations

import pytest

from usage.projection.redis_address import RedisAddress, node_urls, parse

ONE_SERVER = [
    "redis://127.0.0.1:6379/0",
    "rediss://app:secret@cache.example:6380/1",
    "unix:///tmp/redis.sock?client_name=claude-usage-1",
]

CLUSTERS: list[tuple[str, RedisAddress]] = [
    (
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:7002",
        RedisAddress(
            cluster=True,
            node_urls=(
                "redis://10.0.0.1:7000/0",
                "redis://10.0.0.2:7001/0",
                "redis://10.0.0.3:7002/0",
            ),
            nodes=(("10.0.0.1", 7000), ("10.0.0.2", 7001), ("10.0.0.3", 7002)),
        ),
    ),
    (
        "rediss+cluster://app:s%40cret@cache-1:6380,[::1]:7000/0?ssl_cert_reqs=none",
        RedisAddress(
            cluster=True,
            node_urls=(
                "rediss://app:s%40cret@cache-1:6380/0?ssl_cert_reqs=none",
                "rediss://app:s%40cret@[::1]:7000/0?ssl_cert_reqs=none",
            ),
            nodes=(("cache-1", 6380), ("::1", 7000)),
        ),
    ),
    (
        "redis+cluster://cache/",
        RedisAddress(cluster=True, node_urls=("redis://cache/0",), nodes=(("cache", 6379),)),
    ),
]

NOT_CLUSTERS = [
    "redis+cluster://",
    "redis+cluster://a:7000,,b:7000",
    "redis+cluster://a:7000,b:port",
    "redis+cluster://a:7000,b:99999",
    "redis+cluster://a:7000/1",
    "redis+cluster://a:7000/0#fragment",
]


@pytest.mark.parametrize("url", ONE_SERVER)
def test_any_other_url_names_one_server_which_is_the_channel_layers_one_host(url: str) -> None:
    assert parse(url) == RedisAddress(cluster=False, node_urls=(url,))
    assert node_urls(url) == [url]


@pytest.mark.parametrize(("url", "address"), CLUSTERS)
def test_a_cluster_url_names_each_node_with_the_credentials_and_options_they_share(
    url: str, address: RedisAddress
) -> None:
    assert parse(url) == address
    assert node_urls(url) == list(address.node_urls)


@pytest.mark.parametrize("url", NOT_CLUSTERS)
def test_a_cluster_url_that_does_not_read_is_refused_and_left_to_the_checks(url: str) -> None:
    with pytest.raises(ValueError, match="redis\\+cluster"):
        parse(url)
    assert node_urls(url) == [url]  # the settings load; backend/checks.py reports it
