"""Deferred submissions replayed while several processes see maintenance end at once."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from celery import Celery

from maintenance_guard import MaintenanceGuard
from maintenance_guard.deferred import DeferredQueue
from tests.helpers import wait_for
from tests.integration.celery_support import Broker, new_queue, runs
from tests.reliability.conftest import Proc, actor
from tests.reliability.workers import StartRelWorker, amqp_broker, producers, rel_worker

__all__ = ["amqp_broker", "producers", "rel_worker"]

REPLAYERS = 3
SUBMISSIONS = 30


@pytest.mark.slow
def test_deferred_submissions_replay_exactly_once_in_order_with_several_processes_racing(
    amqp_broker: Broker,
    rel_worker: StartRelWorker,
    producers: Callable[..., Celery],
    guard: MaintenanceGuard,
    redis_url: str,
    redis_client: redis.Redis,
    key_prefix: str,
    spawn: Callable[..., Proc],
) -> None:
    queue = new_queue(amqp_broker)
    # One worker slot, so the execution order is the order the messages were sent in.
    rel_worker(amqp_broker, queue, name="replay-worker", concurrency=1)
    others = [
        spawn(*actor("replayer", redis_url, key_prefix, amqp_broker.url, queue))
        for _ in range(REPLAYERS)
    ]
    for p in others:
        p.expect("ready")
    producer = producers(amqp_broker, queue)

    enabled = guard.enable("normal", reason="replay drill", by="ops")
    wait_for(lambda: producer._maintenance_guard.guard.current().version == enabled.version)
    tokens = [f"d{i:02d}" for i in range(SUBMISSIONS)]
    deferrable = producer.tasks["mgtest.deferrable"]
    for token in tokens:
        deferrable.delay(token)  # on_maintenance="defer": parked, not refused
    deferred = DeferredQueue(guard.store)
    assert [e.payload["args"] for e in deferred.entries()] == [f'["{t}"]' for t in tokens]
    assert amqp_broker.queue_length(queue) == 0
    assert runs(redis_client, key_prefix) == []

    # Five processes see the end at once (three producers, the worker, this one).
    guard.disable(by="ops")

    def state() -> str:
        return (
            f"runs={runs(redis_client, key_prefix)} parked={len(deferred)} "
            f"replaying={len(deferred.replaying())} queued={amqp_broker.queue_length(queue)} "
            f"replayer stderr={[p.stderr_lines[-5:] for p in others]}"
        )

    try:
        wait_for(lambda: len(runs(redis_client, key_prefix)) >= SUBMISSIONS, timeout=60)
        wait_for(lambda: len(deferred) == 0 and not deferred.replaying(), timeout=30)
        wait_for(lambda: amqp_broker.queue_length(queue) == 0, timeout=30)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {state()}") from None
    assert runs(redis_client, key_prefix) == tokens, state()  # each exactly once, in order
    for p in others:
        assert p.proc.poll() is None, p.stderr_lines[-20:]
