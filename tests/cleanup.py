"""What the suite leaves behind, and removing it: key prefixes, broker queues, exchanges.

Tests name everything they create after a per-test key prefix (``mgtest-...``) or queue
(``mgq-...``, ``mg-rel-...``). The fixtures delete those names after each test (conftest's
``cleanup_after_test`` runs after every other fixture of the test), and at the end of the
session `leftover_keys` and `leftover_amqp` say what is still there.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable

import redis

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"

# Every Redis key the suite writes contains one of these (prefixes, queues, bindings).
SUITE_KEY_PATTERNS = ("*mgtest-*", "*mgq-*", "*mg-rel-*")

# Queue names declared on the shared RabbitMQ during this session (checked at the end).
amqp_names: set[str] = set()
# Which test each key prefix belonged to, so a leftover key names its test.
prefix_owners: dict[str, str] = {}


def owner_of(key: str) -> str:
    """The test whose prefix ``key`` names ("" if none)."""
    return next((test for prefix, test in prefix_owners.items() if prefix in key), "")


# Threads of the package that keep writing a prefix's keys on their own: a guard's watcher
# (presence records, counters) and an emergency finishing in the background (its report).
# The replayer and the in-flight writer only write when a guard or a job asks them to.
_WATCHER = "maintenance-guard-watcher"
_EMERGENCY = "maintenance-guard-emergency"


def _prefix_of(thread: threading.Thread) -> str | None:
    # A running Thread keeps its target and arguments (CPython drops them when it ends):
    # the guard, or the first argument that has a store, tells the key prefix.
    target = getattr(thread, "_target", None)
    for candidate in (getattr(target, "__self__", None), *getattr(thread, "_args", ())):
        owner = getattr(candidate, "guard", candidate)  # a guard's watcher, an emergency run
        prefix = getattr(getattr(owner, "store", None), "prefix", None)
        if isinstance(prefix, str):
            return prefix
    return None


def stop_local_writers(prefix: str, timeout: float = 30.0) -> None:
    """Stop the watchers of this process on ``prefix`` (a guard a test never stopped, e.g.
    one `install` made) and wait for its other writer threads, so nothing writes a key of
    the prefix after it was deleted."""
    for thread in threading.enumerate():
        if thread.name not in (_WATCHER, _EMERGENCY) or _prefix_of(thread) != prefix:
            continue
        watcher = getattr(getattr(thread, "_target", None), "__self__", None)
        guard = getattr(watcher, "guard", None)
        if thread.name == _WATCHER and hasattr(guard, "stop"):
            guard.stop(timeout=2)  # the guard's, not only the thread: it would restart
        else:
            thread.join(timeout)


def delete_matching(client: redis.Redis, pattern: str) -> int:
    """Delete every key matching ``pattern``; how many were deleted."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(client.delete(*batch))
            batch = []
    if batch:
        deleted += int(client.delete(*batch))
    return deleted


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key that names ``prefix`` (``{prefix}:...`` and ``prefix-...`` forms),
    after stopping the in-process writers of that prefix."""
    stop_local_writers(prefix)
    client = redis.Redis.from_url(url)
    try:
        delete_matching(client, f"*{prefix}*")
    finally:
        client.close()


def delete_redis_queues(url: str, queues: Iterable[str]) -> None:
    """Delete what kombu's Redis transport keeps for ``queues``: the lists (one per
    priority), the binding tables and permanent sets of the queue's exchange, of its
    control exchanges (``mgctl-<queue>``) and reply queues, their binding deadlines, and
    unacknowledged messages (``unacked``) of those queues."""
    client = redis.Redis.from_url(url)
    try:
        for queue in queues:
            delete_matching(client, f"*{queue}*")
            stale = [
                member
                for member, _ in client.zscan_iter("_kombu.binding_deadlines")
                if queue.encode() in member
            ]
            if stale:
                client.zrem("_kombu.binding_deadlines", *stale)
            tags = [t for t, body in client.hscan_iter("unacked") if queue.encode() in body]
            if tags:
                client.hdel("unacked", *tags)
                client.zrem("unacked_index", *tags)
    finally:
        client.close()


def forget_default_pidbox(url: str) -> None:
    """Drop the binding deadline kombu keeps for Celery's default control exchange
    (``celery.pidbox``), which a worker of an app without its own exchange leaves."""
    client = redis.Redis.from_url(url)
    try:
        client.zrem("_kombu.binding_deadlines", "celery.pidbox", "reply.celery.pidbox")
    finally:
        client.close()


def amqp_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=0.5):
            return True
    except OSError:
        return False


def _amqp_exchanges(queue: str) -> list[str]:
    # The default exchange of a Celery queue has its name; an app whose control exchange
    # is ``mgctl-<queue>`` (tests/integration/emergency_support.py) adds two more.
    return [queue, f"mgctl-{queue}.pidbox", f"reply.mgctl-{queue}.pidbox"]


def delete_amqp_queues(queues: Iterable[str], url: str = AMQP_URL) -> None:
    """Delete ``queues`` and their exchanges on RabbitMQ (each in a channel of its own:
    a failed delete closes the channel)."""
    from kombu import Connection

    with Connection(url) as conn:
        for queue in queues:
            amqp_names.add(queue)
            for exchange in (None, *_amqp_exchanges(queue)):
                channel = conn.channel()
                try:
                    if exchange is None:
                        channel.queue_delete(queue=queue)
                    else:
                        channel.exchange_delete(exchange=exchange)
                except Exception:
                    pass  # never declared
                finally:
                    try:
                        channel.close()
                    except Exception:
                        pass


def leftover_amqp(url: str = AMQP_URL) -> list[str]:
    """Queues and exchanges of this session's test queues that still exist on RabbitMQ."""
    if not amqp_names or not amqp_available():
        return []
    from kombu import Connection

    left: list[str] = []
    with Connection(url) as conn:
        for queue in sorted(amqp_names):
            checks = [("queue", queue)] + [("exchange", e) for e in _amqp_exchanges(queue)]
            for kind, name in checks:
                channel = conn.channel()
                try:
                    if kind == "queue":
                        channel.queue_declare(queue=name, passive=True)
                    else:
                        channel.exchange_declare(exchange=name, type="direct", passive=True)
                    left.append(f"{kind} {name}")
                except Exception:
                    pass  # gone, as it should be
                finally:
                    try:
                        channel.close()
                    except Exception:
                        pass
    return left


def leftover_keys(url: str, *, private: bool) -> list[str]:
    """Keys left on the suite's Redis: every key of every database of a private server,
    else the keys matching `SUITE_KEY_PATTERNS`."""
    client = redis.Redis.from_url(url, decode_responses=True, encoding_errors="backslashreplace")
    try:
        if not private:
            found: set[str] = set()
            for pattern in SUITE_KEY_PATTERNS:
                found.update(client.scan_iter(match=pattern, count=1000))
            return sorted(found)
        left: list[str] = []
        for name, info in client.info("keyspace").items():
            db = int(str(name).removeprefix("db"))
            if not isinstance(info, dict) or not info.get("keys"):
                continue
            # Not from_url(url, db=db): the URL's own database would win.
            pool = redis.ConnectionPool(
                connection_class=client.connection_pool.connection_class,
                **dict(client.connection_pool.connection_kwargs, db=db),
            )
            other = redis.Redis(connection_pool=pool)
            try:
                left += [f"db{db}: {key}" for key in other.scan_iter(count=1000)]
            finally:
                other.close()
        return sorted(left)
    finally:
        client.close()
