"""In-flight registry, drain and the jobs/drain/deferred CLI on real prefork workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import redis
from celery import Celery

from maintenance_guard import InvalidInput, MaintenanceGuard, UnknownOperation
from maintenance_guard.deferred import DeferredQueue
from maintenance_guard.inflight import InflightJob, InflightRegistry
from maintenance_guard.tracking import InflightTracker
from tests.helpers import wait_for
from tests.integration import celery_support
from tests.integration.celery_support import (
    ROOT,
    Broker,
    StartWorker,
    make_app,
    new_queue,
    runs,
    uninstall,
    wait_runs,
)

redis_broker = celery_support.redis_broker
start_worker = celery_support.start_worker


@pytest.fixture
def producer(
    redis_broker: Broker, guard: MaintenanceGuard, key_prefix: str
) -> Iterator[tuple[Celery, str]]:
    """A producer app guarded by the test's `guard`, on the Redis broker and a fresh queue."""
    queue = new_queue(redis_broker)
    app = make_app(
        broker=redis_broker.url,
        redis_url=redis_broker.redis_url,
        prefix=key_prefix,
        queue=queue,
        guard=guard,
    )
    yield app, queue
    uninstall(app)


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maintenance_guard.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_running_jobs_are_tracked_finish_during_maintenance_and_drain_returns(
    redis_broker: Broker,
    producer: tuple[Celery, str],
    start_worker: StartWorker,
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    app, queue = producer
    worker = start_worker(redis_broker, queue)
    registry = InflightRegistry(guard.store)
    result = app.tasks["mgtest.caption"].apply_async(("long",), kwargs={"duration": 2.0})
    jobs = wait_for(lambda: registry.jobs(), timeout=30)
    assert isinstance(jobs, list)
    job = jobs[0]
    assert isinstance(job, InflightJob)
    assert (job.id, job.name, job.operation) == (result.id, "mgtest.caption", "caption_generation")
    assert job.worker == worker.hostname
    assert job.pid not in (0, worker.process.pid)  # a pool process, not the main one
    assert job.started_at > 0

    guard.enable("normal", reason="db upgrade", by="test")
    assert guard.status().active_jobs_count == 1
    drained = guard.drain(timeout=30)
    assert drained.drained
    assert "long" in runs(redis_client, key_prefix)  # it finished, it was not cut short
    assert registry.jobs() == []
    assert guard.status().active_jobs_count == 0


def test_drain_times_out_and_lists_what_still_runs(
    redis_broker: Broker,
    producer: tuple[Celery, str],
    start_worker: StartWorker,
    guard: MaintenanceGuard,
    cli_env: dict[str, str],
) -> None:
    app, queue = producer
    start_worker(redis_broker, queue)
    result = app.tasks["mgtest.spin"].delay("slow", 8.0)
    registry = InflightRegistry(guard.store)
    wait_for(lambda: registry.jobs(), timeout=30)

    outcome = guard.drain(timeout=0.3)
    assert not outcome.drained
    assert [j.id for j in outcome.remaining] == [result.id]
    assert guard.drain(timeout=0.2, operations=["caption_generation"]).drained

    listed = cli(cli_env, "jobs")
    assert listed.returncode == 0, listed.stderr
    assert result.id in listed.stdout and "mgtest.spin" in listed.stdout
    as_json = json.loads(cli(cli_env, "jobs", "--json").stdout)
    assert [j["id"] for j in as_json] == [result.id]

    timed_out = cli(cli_env, "drain", "--timeout", "0.5")
    assert timed_out.returncode == 1
    assert "still running" in timed_out.stdout and result.id in timed_out.stdout
    assert "job(s) left" in timed_out.stderr  # the progress bar

    finished = cli(cli_env, "drain", "--timeout", "30")
    assert finished.returncode == 0, finished.stderr
    assert "Drained" in finished.stdout


@pytest.mark.slow
def test_jobs_of_a_killed_worker_drop_out_and_a_restarted_worker_clears_them(
    redis_broker: Broker,
    producer: tuple[Celery, str],
    start_worker: StartWorker,
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
) -> None:
    app, queue = producer
    settings = {"heartbeat_interval": 0.2, "heartbeat_timeout": 1.5}
    worker = start_worker(redis_broker, queue, name="victim", **settings)
    registry = InflightRegistry(guard.store)
    app.tasks["mgtest.spin"].delay("a", 60.0)
    app.tasks["mgtest.spin"].delay("b", 60.0)
    wait_for(lambda: len(registry.jobs()) == 2, timeout=30)
    guard.enable("normal", reason="db upgrade", by="test")

    # Heartbeats push the deadlines forward while the worker lives.
    first = {j.id: j.deadline for j in registry.jobs()}
    wait_for(
        lambda: (
            all(j.deadline > first[j.id] + 1.0 for j in registry.jobs())
            and len(registry.jobs()) == 2
        ),
        timeout=10,
    )

    worker.kill()
    wait_for(lambda: guard.status().active_jobs_count == 0, timeout=15)
    assert registry.jobs() == []
    # The drain's hold waits until the killed worker's processes are known gone (their
    # presence records go stale), then reports drained.
    assert guard.drain(timeout=15).drained

    # A stale record of the same hostname is cleared when it starts again.
    stale = InflightJob("stale-id", "mgtest.spin", "batch_operations", worker.hostname, 1, 1.0)
    InflightRegistry(guard.store, heartbeat_timeout=3600).start(stale)
    assert [j.id for j in registry.jobs()] == ["stale-id"]
    start_worker(redis_broker, queue, name="victim", **settings)
    assert "stale-id" not in [j.id for j in registry.jobs()]
    assert not redis_client.hexists(registry.jobs_key, "stale-id")


def test_defer_option_parks_submissions_and_replays_them_in_order_exactly_once(
    redis_broker: Broker,
    make_guard: Callable[..., MaintenanceGuard],
    guard: MaintenanceGuard,
    key_prefix: str,
    cli_env: dict[str, str],
) -> None:
    queue = new_queue(redis_broker)
    # Four guards (as in four processes) see the end of maintenance at once; the first
    # is the one this test switches with, so its refusals follow without delay.
    apps = [
        make_app(
            broker=redis_broker.url,
            redis_url=redis_broker.redis_url,
            prefix=key_prefix,
            queue=queue,
            guard=guard if i == 0 else make_guard(),
        )
        for i in range(4)
    ]
    try:
        app = apps[0]
        guard.enable("normal", reason="db upgrade", by="test")
        ids = []
        for i in range(30):
            if i % 2:
                res = app.tasks["mgtest.deferrable"].delay(f"d{i}")  # task option
            else:
                res = app.tasks["mgtest.caption"].apply_async((f"d{i}",), on_maintenance="defer")
            ids.append(res.id)
        assert redis_broker.queue_length(queue) == 0
        parked = DeferredQueue(guard.store)
        assert [e.id for e in parked.entries()] == ids
        assert {e.source for e in parked.entries()} == {"publish"}

        listed = cli(cli_env, "deferred")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.index(ids[0]) < listed.stdout.index(ids[-1])
        assert len(json.loads(cli(cli_env, "deferred", "--json").stdout)["deferred"]) == 30

        guard.disable(by="test")
        wait_for(lambda: redis_broker.queue_length(queue) == 30, timeout=30)
        wait_for(lambda: len(parked) == 0 and not parked.replaying(), timeout=30)
        assert redis_broker.queued_ids(queue) == ids  # in order, each exactly once
    finally:
        for made in apps:
            uninstall(made)


def test_replayed_submissions_run_on_a_worker(
    redis_broker: Broker,
    producer: tuple[Celery, str],
    start_worker: StartWorker,
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    app, queue = producer
    guard.enable("normal", reason="db upgrade", by="test")
    start_worker(redis_broker, queue)  # started during maintenance: replays nothing yet
    app.tasks["mgtest.deferrable"].delay("parked")
    assert len(DeferredQueue(guard.store)) == 1
    guard.disable(by="test")
    wait_runs(redis_client, key_prefix, ["parked"])
    assert runs(redis_client, key_prefix).count("parked") == 1


def test_drain_sees_a_job_that_started_just_before_it_while_its_record_waits_to_be_written(
    guard: MaintenanceGuard,
) -> None:
    # A pool process's writer gathers a start that follows another change within its
    # write gap; a drain reading right then must still count the job, not say "drained".
    registry = InflightRegistry(guard.store, guard.settings.heartbeat_timeout, guard.now)
    tracker = InflightTracker(registry, interval=5.0, gap=0.02)
    guard.enable("normal", reason="db upgrade", by="test")
    tracker.started(InflightJob("warm", "mgtest.read", None, "w", 1, guard.now()))
    wait_for(lambda: [j.id for j in registry.jobs()] == ["warm"], timeout=5)
    tracker.finished("warm")
    job = InflightJob("just-started", "mgtest.caption", "caption_generation", "w", 1, guard.now())
    tracker.started(job)  # within the gap: written up to 40 ms later (two gaps)
    outcome = guard.drain(timeout=0, operations=["caption_generation"])  # one poll
    assert not outcome.drained
    assert [j.id for j in outcome.remaining] == ["just-started"]
    tracker.finished("just-started")
    assert tracker.flush(5.0)
    assert guard.drain(timeout=5, operations=["caption_generation"]).drained


def test_a_lost_job_keeps_its_recorded_details_or_gets_those_given(
    guard: MaintenanceGuard,
) -> None:
    registry = InflightRegistry(guard.store, guard.settings.heartbeat_timeout, guard.now)
    now = guard.now()
    recorded = InflightJob("recorded", "mgtest.caption", "caption_generation", "w1", 4242, now)
    registry.start(recorded)
    unwritten = InflightJob("unwritten", "mgtest.caption", "caption_generation", "w1", 0, 0.0)
    given = InflightJob("recorded", "mgtest.caption", "caption_generation", "w1", 0, 0.0)
    registry.lose([given, unwritten])
    assert registry.jobs() == []
    lost = {j.id: j for j in registry.lost(since=now - 1)}
    assert set(lost) == {"recorded", "unwritten"}
    assert (lost["recorded"].pid, lost["recorded"].started_at) == (4242, now)
    assert lost["unwritten"].name == "mgtest.caption"
    assert lost["unwritten"].operation == "caption_generation"
    # A retry of a call that timed out but landed keeps what the first call recorded.
    registry.lose([given])
    again = {j.id: j for j in registry.lost(since=now - 1)}
    assert (again["recorded"].pid, again["recorded"].started_at) == (4242, now)


def test_drain_and_cli_refuse_bad_input(guard: MaintenanceGuard, cli_env: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        guard.drain(timeout=-1)
    with pytest.raises(UnknownOperation):
        guard.drain(timeout=1, operations=["captions"])
    for args in (["drain", "--timeout", "-1"], ["drain", "--operation", "nope"]):
        done = cli(cli_env, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("Error:")
    assert os.environ.get("MG_WORKER_PREFIX") is None


def test_worker_registers_when_ready_and_unregisters_on_warm_shutdown(
    redis_broker: Broker,
    start_worker: StartWorker,
    guard: MaintenanceGuard,
) -> None:
    queue = new_queue(redis_broker)
    worker = start_worker(redis_broker, queue)
    registry = InflightRegistry(guard.store)
    info = registry.workers()[worker.hostname]
    assert info["pid"] == worker.process.pid
    worker.stop()
    assert worker.process.returncode == 0
    assert worker.hostname not in registry.workers()
