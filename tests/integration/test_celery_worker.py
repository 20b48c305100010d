"""The worker side on real prefork workers: re-check, deferral and replay, retries."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis
from celery import Celery, chain, chord

from maintenance_guard import MaintenanceActive, MaintenanceGuard
from maintenance_guard.deferred import DeferredQueue
from maintenance_guard.inflight import InflightRegistry
from tests.helpers import wait_for
from tests.integration import celery_support
from tests.integration.celery_support import (
    Broker,
    StartWorker,
    flag_key,
    make_app,
    new_queue,
    runs,
    uninstall,
    wait_runs,
    wait_until_seen,
)

broker = celery_support.broker
redis_broker = celery_support.redis_broker
start_worker = celery_support.start_worker


@pytest.fixture
def apps(
    make_guard: Callable[..., MaintenanceGuard], guard: MaintenanceGuard, key_prefix: str
) -> Iterator[Callable[..., Celery]]:
    """Factory for producer apps in this process: guarded by the test's `guard` (or by
    a guard of their own, as another process would be), or without guard."""
    made: list[Celery] = []

    def make(
        broker: Broker, queue: str, *, guarded: bool = True, own_guard: bool = False
    ) -> Celery:
        app = make_app(
            broker=broker.url,
            redis_url=broker.redis_url,
            prefix=key_prefix,
            queue=queue,
            guard=(make_guard() if own_guard else guard) if guarded else None,
            guarded=guarded,
        )
        made.append(app)
        return app

    yield make
    for app in made:
        uninstall(app)


def idle(broker: Broker, queue: str, guard: MaintenanceGuard) -> bool:
    """Nothing queued, running, parked or being replayed."""
    deferred = DeferredQueue(guard.store)
    registry = InflightRegistry(guard.store)
    return (
        broker.queue_length(queue) == 0
        and not registry.jobs()
        and len(deferred) == 0
        and not deferred.replaying()
    )


def test_no_guard_producer_message_is_deferred_and_replayed_once_after_maintenance(
    broker: Broker,
    start_worker: StartWorker,
    apps: Callable[..., Celery],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    queue = new_queue(broker)
    worker = start_worker(broker, queue)
    # Three more processes' worth of replayers compete with the worker at the end.
    apps(broker, queue, own_guard=True)
    apps(broker, queue, own_guard=True)
    plain = apps(broker, queue, guarded=False)

    guard.enable("normal", reason="db upgrade", by="test")
    wait_until_seen(guard, worker)
    plain.send_task("mgtest.caption", args=["no-guard-1"])
    plain.send_task("mgtest.caption", args=["no-guard-2"])
    plain.send_task("mgtest.read", args=["no-guard-read"])  # a read is not blocked
    deferred = DeferredQueue(guard.store)
    wait_for(lambda: len(deferred) == 2, timeout=30)
    wait_runs(redis_client, key_prefix, ["no-guard-read"])
    assert [e.source for e in deferred.entries()] == ["worker", "worker"]
    assert broker.queue_length(queue) == 0
    assert "no-guard-1" not in runs(redis_client, key_prefix)

    guard.disable(by="test")
    wait_runs(redis_client, key_prefix, ["no-guard-1", "no-guard-2"])
    wait_for(lambda: idle(broker, queue, guard), timeout=30)
    done = runs(redis_client, key_prefix)
    assert done.count("no-guard-1") == 1
    assert done.count("no-guard-2") == 1


def test_reject_policy_drops_no_guard_message_without_running_or_parking_it(
    redis_broker: Broker,
    start_worker: StartWorker,
    apps: Callable[..., Celery],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    queue = new_queue(redis_broker)
    worker = start_worker(redis_broker, queue, worker_policy="reject")
    plain = apps(redis_broker, queue, guarded=False)
    guard.enable("normal", reason="db upgrade", by="test")
    wait_until_seen(guard, worker)
    plain.send_task("mgtest.caption", args=["rejected"])
    wait_for(lambda: "rejected mgtest.caption" in worker.log(), timeout=30)
    plain.send_task("mgtest.read", args=["sentinel"])
    wait_runs(redis_client, key_prefix, ["sentinel"])
    assert "rejected" not in runs(redis_client, key_prefix)
    assert len(DeferredQueue(guard.store)) == 0
    assert redis_broker.queue_length(queue) == 0


def test_messages_published_before_maintenance_run_on_a_worker_started_during_it(
    broker: Broker,
    start_worker: StartWorker,
    apps: Callable[..., Celery],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    queue = new_queue(broker)
    producer = apps(broker, queue)
    plain = apps(broker, queue, guarded=False)
    producer.tasks["mgtest.caption"].delay("before-1")
    producer.tasks["mgtest.guarded_caption"].delay("before-2")
    assert broker.queue_length(queue) == 2
    guard.enable("normal", reason="db upgrade", by="test")
    plain.send_task("mgtest.caption", args=["during-no-guard"])
    assert broker.queue_length(queue) == 3

    start_worker(broker, queue)  # starts during maintenance
    wait_runs(redis_client, key_prefix, ["before-1", "before-2"])
    deferred = DeferredQueue(guard.store)
    wait_for(lambda: len(deferred) == 1, timeout=30)
    assert deferred.entries()[0].task == "mgtest.caption"
    assert "during-no-guard" not in runs(redis_client, key_prefix)


def test_emergency_does_not_start_blocked_messages_even_from_before_it_began(
    redis_broker: Broker,
    start_worker: StartWorker,
    apps: Callable[..., Celery],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    queue = new_queue(redis_broker)
    worker = start_worker(redis_broker, queue)
    plain = apps(redis_broker, queue, guarded=False)
    guard.enable("emergency", reason="breach", by="test")
    wait_until_seen(guard, worker)
    # Stamped as published by a guarded producer an hour ago: normal mode would run it.
    stamp = {"mg_published_at": repr(time.time() - 3600), "mg_guarded": "1"}
    plain.send_task("mgtest.caption", args=["stamped-before"], headers=stamp)
    plain.send_task("mgtest.read", args=["read-in-emergency"])
    deferred = DeferredQueue(guard.store)
    wait_for(lambda: len(deferred) == 2, timeout=30)
    assert redis_broker.queue_length(queue) == 0
    assert runs(redis_client, key_prefix) == []
    guard.disable(by="test")
    wait_runs(redis_client, key_prefix, ["stamped-before", "read-in-emergency"])


def test_a_worker_with_a_stale_view_reads_the_store_before_holding_a_message_back(
    redis_broker: Broker,
    start_worker: StartWorker,
    apps: Callable[..., Celery],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    """A replayer or producer may see maintenance end before the worker's notification
    arrives; the worker must not park (and so reorder) a message on its stale view."""
    queue = new_queue(redis_broker)
    guard.enable("normal", reason="db upgrade", by="test")
    worker = start_worker(redis_broker, queue, poll_interval=30)  # no poll during the test
    wait_until_seen(guard, worker)
    # Maintenance ends without a notification reaching the worker (a late pub/sub message).
    store = guard.store
    redis_client.hset(store.state_key, "mode", "")  # type: ignore[attr-defined]
    redis_client.hincrby(store.state_key, "version", 1)  # type: ignore[attr-defined]
    plain = apps(redis_broker, queue, guarded=False)
    plain.send_task("mgtest.caption", args=["after-the-end"])
    wait_runs(redis_client, key_prefix, ["after-the-end"], timeout=15)  # well before a poll
    assert len(DeferredQueue(guard.store)) == 0
    assert not [e for e in guard.events() if e.type.startswith("worker_")]


def test_retry_of_a_running_job_is_allowed_in_normal_mode(
    redis_broker: Broker,
    start_worker: StartWorker,
    apps: Callable[..., Celery],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    queue = new_queue(redis_broker)
    start_worker(redis_broker, queue)
    producer = apps(redis_broker, queue)
    producer.tasks["mgtest.retrying"].delay("job")
    wait_runs(redis_client, key_prefix, ["job"])
    guard.enable("normal", reason="db upgrade", by="test")
    redis_client.set(flag_key(key_prefix, "job"), "1")
    wait_runs(redis_client, key_prefix, ["job:retry"])
    assert len(DeferredQueue(guard.store)) == 0


def test_retry_of_a_running_job_is_refused_in_emergency(
    redis_broker: Broker,
    start_worker: StartWorker,
    apps: Callable[..., Celery],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    queue = new_queue(redis_broker)
    worker = start_worker(redis_broker, queue)
    producer = apps(redis_broker, queue)
    producer.tasks["mgtest.retrying"].delay("job")
    wait_runs(redis_client, key_prefix, ["job"])
    guard.enable("emergency", reason="breach", by="test")
    redis_client.set(flag_key(key_prefix, "job"), "1")
    # The job ends once its retry was refused (Celery rejects it: an explicit, logged end).
    wait_for(lambda: not InflightRegistry(guard.store).jobs(), timeout=30)
    assert redis_broker.queue_length(queue) == 0
    assert len(DeferredQueue(guard.store)) == 0
    assert "job:retry" not in runs(redis_client, key_prefix)
    assert "MaintenanceActive" in worker.log()


def test_canvas_started_before_maintenance_continues_as_running_work(
    redis_broker: Broker,
    start_worker: StartWorker,
    apps: Callable[..., Celery],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    queue = new_queue(redis_broker)
    start_worker(redis_broker, queue)
    producer = apps(redis_broker, queue)
    spin = producer.tasks["mgtest.spin"]
    caption = producer.tasks["mgtest.caption"]
    collect = producer.tasks["mgtest.collect"]
    chain(spin.si("step-1", 1.0), caption.si("step-2")).apply_async()
    chord([spin.si("header-1", 1.0), spin.si("header-2", 1.0)], collect.s("body")).apply_async()
    wait_for(lambda: len(InflightRegistry(guard.store).jobs()) >= 2, timeout=30)
    guard.enable("normal", reason="db upgrade", by="test")
    wait_runs(redis_client, key_prefix, ["step-2", "body"])
    # A new submission of the same task is still refused.
    with pytest.raises(MaintenanceActive):
        caption.delay("new")


def test_countdown_message_received_before_an_emergency_is_held_back_when_due(
    redis_broker: Broker,
    start_worker: StartWorker,
    apps: Callable[..., Celery],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    queue = new_queue(redis_broker)
    worker = start_worker(redis_broker, queue)
    producer = apps(redis_broker, queue)
    result = producer.tasks["mgtest.caption"].apply_async(("eta",), countdown=3)
    # The worker holds it (received, waiting for its countdown): gone from the queue.
    wait_for(lambda: redis_broker.queue_length(queue) == 0, timeout=30)
    wait_for(lambda: f"mgtest.caption[{result.id}] received" in worker.log(), timeout=10)
    guard.enable("emergency", reason="breach", by="test")
    deferred = DeferredQueue(guard.store)
    wait_for(lambda: len(deferred) == 1, timeout=30)
    assert deferred.entries()[0].id == result.id
    assert runs(redis_client, key_prefix) == []
    guard.disable(by="test")
    wait_runs(redis_client, key_prefix, ["eta"])
    wait_for(lambda: idle(redis_broker, queue, guard), timeout=30)
    assert runs(redis_client, key_prefix) == ["eta"]
