"""The suite itself: its own Redis, and nothing left behind by a test's names.

The session-end check in conftest.py fails the run when keys remain; these tests prove
the pieces it relies on: the private server, and the cleanup of a prefix and of a queue.
"""

from __future__ import annotations

import os
import threading
import uuid
from urllib.parse import urlparse

import pytest
import redis

from maintenance_guard import MaintenanceGuard
from tests.cleanup import amqp_available, delete_prefix, leftover_amqp
from tests.helpers import wait_for
from tests.integration.celery_support import AMQP_URL, Broker, make_app, new_queue, uninstall


def test_the_suite_runs_on_a_private_redis_without_persistence_unless_redis_url_is_set(
    redis_url: str, redis_client: redis.Redis
) -> None:
    if os.environ.get("REDIS_URL"):
        pytest.skip("REDIS_URL chooses the Redis")
    assert urlparse(redis_url).port != 6379
    assert redis_client.config_get("save")["save"] == ""
    assert redis_client.config_get("appendonly")["appendonly"] == "no"


def test_prefix_cleanup_stops_a_guard_nobody_stopped_so_it_writes_nothing_afterwards(
    redis_url: str, redis_client: redis.Redis
) -> None:
    prefix = f"mgtest-{uuid.uuid4().hex[:12]}"
    guard = MaintenanceGuard.from_url(redis_url, key_prefix=prefix, poll_interval=0.05)
    guard.enable("test", reason="left running")
    guard.start()
    wait_for(lambda: redis_client.exists(f"{{{prefix}}}:processes"))  # presence written
    mine = [
        t
        for t in threading.enumerate()
        if getattr(getattr(t, "_target", None), "__self__", None) is guard._watcher
    ]
    assert mine  # the guard's watcher runs
    delete_prefix(redis_url, prefix)
    assert not any(t.is_alive() for t in mine)
    assert list(redis_client.scan_iter(match=f"*{prefix}*")) == []


@pytest.mark.parametrize("kind", ["redis", "amqp"])
def test_broker_cleanup_deletes_queue_bindings_results_and_control_exchanges(
    kind: str, redis_url: str, key_prefix: str, redis_client: redis.Redis
) -> None:
    if kind == "amqp" and not amqp_available():
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    broker = Broker(kind, AMQP_URL if kind == "amqp" else redis_url, redis_url)
    queue = new_queue(broker)
    app = make_app(broker=broker.url, redis_url=redis_url, prefix=key_prefix, queue=queue)
    try:
        app.send_task("mgtest.read", args=["queued"])  # declares the queue and its binding
        assert app.control.ping(timeout=0.2) == []  # a reply queue, no worker to answer
        assert broker.queue_length(queue) == 1
    finally:
        uninstall(app)
        app.close()
    broker.cleanup()
    assert list(redis_client.scan_iter(match=f"*{queue}*")) == []
    deadlines = [m for m, _ in redis_client.zscan_iter("_kombu.binding_deadlines") if queue in m]
    assert deadlines == []
    if kind == "amqp":
        assert [name for name in leftover_amqp() if queue in name] == []
