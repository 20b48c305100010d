"""Redis connections: a redis-py client for a URL (Sentinel URLs included), with the
timeouts and retry policy the guard relies on."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import parse_qs, urlparse

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from ..errors import InvalidInput
from ..urls import mask_url, redact

MAX_CONNECTIONS = 2


def connect(url: str, **options: Any) -> redis.Redis[Any]:
    """A redis-py client for ``url``; ``redis+sentinel://`` URLs go through Sentinel,
    ``redis+cluster://`` URLs to a Redis Cluster.

    Sentinel form: ``redis+sentinel://host:26379[,host2:26379]/service_name/db``.
    Cluster form: ``redis+cluster://[:password@]host:7000[,host2:7000]`` (any nodes;
    the rest are discovered).
    Raises `InvalidInput` (the URL shown with its password masked) for an unusable URL.
    """
    options.setdefault("decode_responses", True)
    options.setdefault("socket_timeout", 2.0)
    options.setdefault("socket_connect_timeout", 2.0)
    options.setdefault("health_check_interval", 15)
    # redis-py retries a timed-out command three times with backoff by default: against
    # a hung Redis one call then takes ~26 s, not socket_timeout. Retry once, and only
    # on a broken connection (a timed-out write may still land: the caller decides).
    options.setdefault("retry", Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
    try:
        if url.startswith("redis+sentinel://"):
            return _connect_sentinel(url, options)
        if url.startswith("redis+cluster://"):
            return _connect_cluster(url, options)
        # At most two connections per guard and process: its subscription and one for
        # commands (a thread that finds it busy waits for it, up to the timeouts). A fleet
        # of thousands of processes then stays far below Redis' maxclients.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=options["socket_timeout"] + options["socket_connect_timeout"],
            **options,
        )
        return redis.Redis(connection_pool=pool)
    except ValueError as exc:
        if isinstance(exc, InvalidInput):
            raise
        reason = redact(str(exc), url)
        raise InvalidInput(f"not a usable Redis URL {mask_url(url)!r}: {reason}") from None


def _nodes(netloc: str, default_port: int) -> list[tuple[str, int]]:
    nodes = []
    for part in netloc.split("@")[-1].split(","):
        host, _, port = part.partition(":")
        if not host:
            raise InvalidInput("a node address needs a host: host:port[,host:port]")
        nodes.append((host, int(port or default_port)))
    return nodes


def _connect_cluster(url: str, options: dict[str, Any]) -> redis.Redis[Any]:
    from redis.cluster import ClusterNode, RedisCluster

    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    password = parsed.password or next(iter(query.get("password", [])), None)
    options.pop("health_check_interval", None)
    nodes = [ClusterNode(host, port) for host, port in _nodes(parsed.netloc, 6379)]
    # Typed as a Redis: the store uses the commands both clients share.
    return cast("redis.Redis[Any]", RedisCluster(startup_nodes=nodes, password=password, **options))


def _connect_sentinel(url: str, options: dict[str, Any]) -> redis.Redis[Any]:
    from redis.sentinel import Sentinel

    parsed = urlparse(url)
    hosts = _nodes(parsed.netloc, 26379)
    path = [p for p in parsed.path.split("/") if p]
    if not path:
        raise InvalidInput("a sentinel URL needs the service name: .../service_name/db")
    db = int(path[1]) if len(path) > 1 else 0
    query = parse_qs(parsed.query)
    password = parsed.password or next(iter(query.get("password", [])), None)
    sentinel = Sentinel(
        hosts,
        sentinel_kwargs={
            "socket_timeout": options["socket_timeout"],
            "socket_connect_timeout": options["socket_connect_timeout"],
            "retry": options["retry"],
        },
    )
    return cast(
        "redis.Redis[Any]",
        sentinel.master_for(path[0], db=db, password=password, **options),
    )
