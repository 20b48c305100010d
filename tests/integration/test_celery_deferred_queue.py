"""The deferred queue on real Redis: order, exactly-once replay across OS processes."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import pytest
import redis

from maintenance_guard import InvalidInput, MaintenanceGuard
from maintenance_guard.deferred import DeferredEntry, DeferredQueue, check_policy, new_entry
from maintenance_guard.store import RedisStore


def _entry(i: int) -> DeferredEntry:
    return new_entry(
        entry_id=f"job-{i:04d}",
        kind="call",
        task="mgtest.caption",
        operation="caption_generation",
        source="publish",
        reason="test",
        payload={"args": f"[{i}]"},
    )


def _replayer(url: str, prefix: str, sent_key: str, start: multiprocessing.Barrier) -> None:
    store = RedisStore.from_url(url, prefix=prefix)
    queue = DeferredQueue(store, "testq")
    client = redis.Redis.from_url(url, decode_responses=True)

    def send(entry: DeferredEntry) -> None:
        client.rpush(sent_key, entry.id)

    start.wait(10)
    # Keep trying until the queue is empty: a process that finds the lock taken retries.
    while len(queue) or queue.replaying():
        queue.replay(send)


def test_replay_by_four_processes_at_once_sends_each_entry_once_in_order(
    redis_url: str, key_prefix: str, guard: MaintenanceGuard, redis_client: redis.Redis
) -> None:
    queue = DeferredQueue(guard.store, "testq")
    for i in range(300):
        queue.park(_entry(i))
    assert [e.id for e in queue.entries()][:3] == ["job-0000", "job-0001", "job-0002"]

    sent_key = f"{{{key_prefix}}}:test:sent"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [
        ctx.Process(target=_replayer, args=(redis_url, key_prefix, sent_key, barrier))
        for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    sent = redis_client.lrange(sent_key, 0, -1)
    assert sent == [f"job-{i:04d}" for i in range(300)]
    assert len(queue) == 0 and queue.replaying() == []


def test_a_failed_send_puts_the_entry_back_at_the_head(guard: MaintenanceGuard) -> None:
    queue = DeferredQueue(guard.store, "testq")
    for i in range(3):
        queue.park(_entry(i))
    sent: list[str] = []

    def flaky(entry: DeferredEntry) -> None:
        if entry.id == "job-0001" and not sent.count("failed-once"):
            sent.append("failed-once")
            raise ConnectionError("broker down")
        sent.append(entry.id)

    first = queue.replay(flaky)
    assert first.sent == ["job-0000"] and first.failed == ["job-0001"]
    assert [e.id for e in queue.entries()] == ["job-0001", "job-0002"]
    second = queue.replay(flaky)
    assert second.sent == ["job-0001", "job-0002"]
    assert sent == ["job-0000", "failed-once", "job-0001", "job-0002"]


def test_replay_stops_when_maintenance_starts_again(guard: MaintenanceGuard) -> None:
    queue = DeferredQueue(guard.store, "testq")
    for i in range(5):
        queue.park(_entry(i))
    sent: list[str] = []
    report = queue.replay(lambda e: sent.append(e.id), keep_going=lambda: len(sent) < 2)
    assert report.sent == ["job-0000", "job-0001"]
    assert len(queue) == 3


def test_bad_policy_is_refused() -> None:
    with pytest.raises(InvalidInput):
        check_policy("later")
    assert check_policy("defer") == "defer"


def test_entry_left_replaying_by_a_dead_replayer_is_listed_and_requeued_on_request(
    guard: MaintenanceGuard, cli_env: dict[str, str]
) -> None:
    queue = DeferredQueue(guard.store, "testq")
    for i in range(3):
        queue.park(_entry(i))
    # A replayer claims the first entry and dies before confirming it.
    queue.redis.set(queue.lock_key, "dead", px=60_000)
    queue._claim(keys=[*queue._keys()[:4], queue.lock_key], args=["dead", 60_000])
    assert [e.id for e in queue.replaying()] == ["job-0000"]

    listed = _cli(cli_env, "deferred")
    assert "replaying now: job-0000" in listed.stdout
    busy = _cli(cli_env, "deferred", "--requeue-stuck")
    assert busy.returncode == 1  # the dead replayer's lock has not expired yet
    queue.redis.delete(queue.lock_key)
    done = _cli(cli_env, "deferred", "--requeue-stuck")
    assert done.returncode == 0, done.stderr
    assert "Requeued 1" in done.stdout
    assert [e.id for e in queue.entries()] == ["job-0000", "job-0001", "job-0002"]
    assert queue.replaying() == []


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maintenance_guard.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
