"""Queue pauses on real prefork workers, on the Redis broker and on RabbitMQ: one of two
queues paused while the other flows, a worker restarted during the pause, a timed pause
ending by itself, prefetched messages going back to the broker (never lost, never run
twice), beat skipping entries, and two apps on one broker.

"Not consumed" is read from the broker's own queue length, never from a log line.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from celery.beat import Scheduler

from maintenance_guard import MaintenanceGuard
from maintenance_guard.pausing import worker_queues
from tests.cleanup import delete_prefix, prefix_owners
from tests.helpers import wait_for
from tests.integration import celery_support
from tests.integration.celery_support import (
    Broker,
    StartWorker,
    make_app,
    new_queue,
    runs,
    spawn_worker,
    uninstall,
    wait_runs,
    worker_env,
)

broker = celery_support.broker
start_worker = celery_support.start_worker


def paused_on(guard: MaintenanceGuard, hostname: str) -> list[str]:
    return list((worker_queues(guard) or {}).get(hostname, {}).get("paused", []))


def publish(app: object, queue: str, tokens: list[str], task: str = "mgtest.caption") -> None:
    for token in tokens:
        app.send_task(task, [token], queue=queue)  # type: ignore[attr-defined]


def test_pausing_one_of_two_queues_stops_it_while_the_other_keeps_flowing(
    broker: Broker,
    guard: MaintenanceGuard,
    start_worker: StartWorker,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    q1, q2 = new_queue(broker), new_queue(broker)
    app = make_app(
        broker=broker.url, redis_url=broker.redis_url, prefix=key_prefix, queue=q1, guard=guard
    )
    try:
        worker = start_worker(broker, q1, also_consume=(q2,))
        result = guard.pause_queues([q2], reason="reindex", by="test")
        assert result.unknown_queues == () and result.warnings == []
        wait_for(lambda: paused_on(guard, worker.hostname) == [q2], timeout=10)
        publish(app, q1, ["a0", "a1", "a2"])
        publish(app, q2, ["b0", "b1", "b2"])
        wait_runs(redis_client, key_prefix, ["a0", "a1", "a2"])
        time.sleep(0.6)
        assert not [t for t in runs(redis_client, key_prefix) if t.startswith("b")]
        assert broker.queue_length(q2) == 3  # still in the broker
        assert guard.resume_queues([q2], by="test") == (q2,)
        wait_runs(redis_client, key_prefix, ["b0", "b1", "b2"])
        wait_for(lambda: paused_on(guard, worker.hostname) == [], timeout=10)
        counts = Counter(runs(redis_client, key_prefix))
        assert set(counts.values()) == {1} and len(counts) == 6
        types = [e.type for e in guard.events()]
        assert types[:2] == ["queues_resumed", "queues_paused"]
    finally:
        uninstall(app)


def test_a_worker_started_or_restarted_during_a_pause_stays_off_the_paused_queue(
    broker: Broker,
    guard: MaintenanceGuard,
    start_worker: StartWorker,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    q1, q2 = new_queue(broker), new_queue(broker)
    app = make_app(
        broker=broker.url, redis_url=broker.redis_url, prefix=key_prefix, queue=q1, guard=guard
    )
    try:
        result = guard.pause_queues([q2], reason="migration", by="test")
        assert result.unknown_queues == (q2,)  # no worker yet: a warning, not an error
        assert "no running worker of this app consumes" in result.warnings[0]
        first = start_worker(broker, q1, name="w", also_consume=(q2,))
        assert paused_on(guard, first.hostname) == [q2]  # registered as paused at start
        publish(app, q2, ["b0", "b1"])
        publish(app, q1, ["a0"])
        wait_runs(redis_client, key_prefix, ["a0"])
        first.kill()  # a crash mid-pause ...
        again = start_worker(broker, q1, name="w", also_consume=(q2,))  # ... and a restart
        publish(app, q1, ["a1"])
        wait_runs(redis_client, key_prefix, ["a1"])
        time.sleep(0.6)
        assert not [t for t in runs(redis_client, key_prefix) if t.startswith("b")]
        assert broker.queue_length(q2) == 2
        guard.resume_queues(everything=True, by="test")
        wait_runs(redis_client, key_prefix, ["b0", "b1"])
        assert paused_on(guard, again.hostname) == []
        assert Counter(runs(redis_client, key_prefix))["b0"] == 1
    finally:
        uninstall(app)


def test_a_timed_pause_ends_by_itself_once_and_consumption_resumes_within_a_poll(
    redis_url: str,
    make_guard: Callable[..., MaintenanceGuard],
    start_worker: StartWorker,
    redis_client: redis.Redis,
    key_prefix: str,
    cleanup_after_test: list[Callable[[], None]],
) -> None:
    broker = Broker("redis", redis_url, redis_url)
    cleanup_after_test.append(broker.cleanup)
    guard = make_guard()
    observers = [make_guard() for _ in range(3)]  # more processes that could end it too
    q1, q2 = new_queue(broker), new_queue(broker)
    app = make_app(broker=broker.url, redis_url=redis_url, prefix=key_prefix, queue=q1, guard=guard)
    try:
        for observer in observers:
            observer.start()
        worker = start_worker(broker, q1, also_consume=(q2,))
        guard.pause_queues([q2], reason="short", by="test", duration=2)
        (pause,) = guard.paused_queues()
        assert pause.ends_at is not None
        wait_for(lambda: paused_on(guard, worker.hostname) == [q2], timeout=10)
        publish(app, q2, ["b0"])
        time.sleep(0.5)
        assert runs(redis_client, key_prefix) == [] and broker.queue_length(q2) == 1
        wait_runs(redis_client, key_prefix, ["b0"], timeout=10)
        ran_after = guard.now() - pause.ends_at
        # The worker's poll interval is 0.2 s; allow scheduling noise, not a missed end.
        assert ran_after < 1.5, ran_after
        wait_for(lambda: not guard.store.load_state().paused_queues, timeout=5)
        ended = [e for e in guard.events() if e.type == "pause_ended"]
        assert len(ended) == 1
    finally:
        uninstall(app)


@pytest.mark.parametrize("acks_late", [False, True], ids=["early-ack", "acks-late"])
def test_messages_prefetched_before_the_pause_go_back_to_the_broker_and_run_once(
    acks_late: bool,
    broker: Broker,
    guard: MaintenanceGuard,
    start_worker: StartWorker,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    queue = new_queue(broker)
    conf = {"worker_prefetch_multiplier": 4, "task_acks_late": acks_late}
    app = make_app(
        broker=broker.url, redis_url=broker.redis_url, prefix=key_prefix, queue=queue, guard=guard
    )
    try:
        worker = start_worker(broker, queue, concurrency=1, celery_conf=conf)
        app.send_task("mgtest.spin", ["slow", 1.5], queue=queue)
        wait_runs(redis_client, key_prefix, ["slow"])
        tokens = [f"c{i}" for i in range(4)]
        publish(app, queue, tokens)

        # The worker holds what its prefetch allows (4 with -c 1): "slow" and 3 more.
        def reserved() -> int:
            replies = app.control.inspect([worker.hostname], timeout=1).reserved() or {}
            return len(replies.get(worker.hostname, []))

        wait_for(lambda: reserved() >= 3, timeout=10)
        guard.pause_queues([queue], reason="prefetch", by="test")
        wait_for(lambda: paused_on(guard, worker.hostname) == [queue], timeout=10)
        # "slow" finishes; what the worker held goes back instead of starting.
        wait_for(lambda: broker.queue_length(queue) == 4, timeout=15)
        assert runs(redis_client, key_prefix) == ["slow"]
        guard.resume_queues([queue], by="test")
        wait_runs(redis_client, key_prefix, tokens)
        time.sleep(0.5)
        counts = Counter(runs(redis_client, key_prefix))
        assert counts == Counter({"slow": 1, **{t: 1 for t in tokens}})
    finally:
        uninstall(app)


def test_beat_skips_entries_bound_for_a_queue_paused_with_beat_and_fires_no_backlog(
    guard: MaintenanceGuard,
    redis_url: str,
    key_prefix: str,
    cleanup_after_test: list[Callable[[], None]],
    tmp_path: Path,
) -> None:
    broker = Broker("redis", redis_url, redis_url)
    cleanup_after_test.append(broker.cleanup)
    q1, q2 = new_queue(broker), new_queue(broker)
    app = make_app(broker=broker.url, redis_url=redis_url, prefix=key_prefix, queue=q1, guard=guard)
    app.conf.beat_schedule = {
        "paused": {
            "task": "mgtest.caption",
            "schedule": 0.1,
            "args": ["p"],
            "options": {"queue": q2},
        },
        "flowing": {
            "task": "mgtest.caption",
            "schedule": 0.1,
            "args": ["f"],
            "options": {"queue": q1},
        },
    }
    scheduler = Scheduler(app=app)  # Celery's own beat scheduler, on the real broker

    def tick_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(max(0.0, min(scheduler.tick(), 0.05)))

    try:
        guard.pause_queues([q2], reason="nightly job off", by="test", beat=True)
        tick_for(1.0)
        assert broker.queue_length(q2) == 0  # skipped, not piled up behind the pause
        assert broker.queue_length(q1) >= 5  # the other entry kept firing
        guard.flush()
        skipped = guard.attempt_counts().get("beat_skipped", {}).get(q2, {}).get("beat", 0)
        assert skipped >= 5
        guard.resume_queues([q2], by="test")
        tick_for(0.55)
        assert 2 <= broker.queue_length(q2) <= 8  # its normal rate; no burst of missed runs
        # Without --beat, beat's entries queue up behind the pause (consumed after it).
        before = broker.queue_length(q2)
        guard.pause_queues([q2], reason="let them queue", by="test")
        tick_for(0.55)
        assert broker.queue_length(q2) >= before + 2
    finally:
        uninstall(app)


def test_a_pause_of_one_app_never_touches_another_apps_workers_on_the_same_broker(
    broker: Broker,
    guard: MaintenanceGuard,
    redis_url: str,
    redis_client: redis.Redis,
    key_prefix: str,
    tmp_path: Path,
    cleanup_after_test: list[Callable[[], None]],
) -> None:
    shared = new_queue(broker)  # both apps have a queue of this name on this broker
    other_prefix = f"mgtest-{uuid.uuid4().hex[:12]}"
    prefix_owners[other_prefix] = "other app of " + key_prefix
    cleanup_after_test.append(lambda: delete_prefix(redis_url, other_prefix))
    other_app = make_app(broker=broker.url, redis_url=redis_url, prefix=other_prefix, queue=shared)
    other = spawn_worker(
        "tests.integration.celery_support",
        shared,
        f"other@{uuid.uuid4().hex[:6]}",
        concurrency=1,
        env=worker_env(broker, redis_url, other_prefix, shared, {}),
        log_path=tmp_path / "other.log",
        redis_url=redis_url,
        key_prefix=other_prefix,
    )
    try:
        result = guard.pause_queues([shared], reason="ours only", by="test")
        assert result.unknown_queues == (shared,)  # the other app's worker is not ours
        publish(other_app, shared, ["o0", "o1"])
        wait_runs(redis_client, other_prefix, ["o0", "o1"])
        assert "not consuming" not in other.log()
    finally:
        other.stop()
        uninstall(other_app)


def test_a_pause_survives_a_redis_that_lost_the_state_while_maintenance_was_off(
    make_guard: Callable[..., MaintenanceGuard], redis_client: redis.Redis
) -> None:
    admin, worker_side = make_guard(), make_guard()
    worker_side.start()
    admin.pause_queues(["reports"], reason="reindex", by="test", duration="1h")
    wait_for(lambda: worker_side.current().paused_queues, timeout=5)
    redis_client.delete(admin.store.state_key)  # a Redis restarted without persistence
    wait_for(lambda: admin.store.load_state() is not None, timeout=5)
    restored = admin.store.load_state()
    assert restored is not None and [p.queue for p in restored.paused_queues] == ["reports"]
    assert [e.type for e in admin.events(limit=1)] == ["state_restored"]
