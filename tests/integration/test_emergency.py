"""Emergency mode on a real prefork worker (Redis broker): grace period, revocation,
records, paused consumption, sessions, deactivation checks and recovery."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest
import redis
from celery import Celery

from maintenance_guard import InvalidInput, MaintenanceGuard, MaintenanceMode
from maintenance_guard.emergency import EmergencyRecords, build_report, recover
from maintenance_guard.inflight import InflightJob, InflightRegistry
from maintenance_guard.sessions import SessionInvalidator
from tests.helpers import wait_for
from tests.integration.celery_support import Broker, broker, new_queue, redis_broker, uninstall
from tests.integration.emergency_support import (
    SHORT,
    SLEEPY,
    STUBBORN,
    UNRECOVERABLE,
    cleanup_key,
    emergency_env,
    finished,
    make_emergency_app,
    start_emergency_worker,
    started,
)

__all__ = ["broker", "redis_broker", "start_emergency_worker"]  # fixtures used by name


@pytest.fixture
def queue(redis_broker: Broker) -> str:
    return new_queue(redis_broker)


@contextmanager
def producer_app(broker: Broker, redis_url: str, key_prefix: str, queue: str) -> Iterator[Celery]:
    """The producer-side app of a test (same queue and control exchange as the worker)."""
    made = make_emergency_app(
        broker=broker.url, redis_url=redis_url, prefix=key_prefix, queue=queue
    )
    try:
        yield made
    finally:
        uninstall(made)
        made.close()


@pytest.fixture
def app(redis_broker: Broker, redis_url: str, key_prefix: str, queue: str) -> Iterator[Celery]:
    with producer_app(redis_broker, redis_url, key_prefix, queue) as made:
        yield made


def send(app: Celery, name: str, token: str, **kwargs: Any) -> str:
    task_id = f"{token}-{uuid.uuid4().hex[:6]}"
    app.send_task(name, args=[token], kwargs=kwargs, task_id=task_id)
    return task_id


def write_sessions(client: redis.Redis, prefix: str) -> None:
    encode = msgspec.msgpack.Encoder().encode
    client.set(f"{prefix}admin", encode({"_user_id": "1", "is_admin": True}))
    for i in range(2, 6):
        client.set(f"{prefix}user{i}", encode({"_user_id": str(i)}))


def test_emergency_lets_short_jobs_finish_terminates_long_ones_and_keeps_queue(
    guard: MaintenanceGuard,
    broker: Broker,
    key_prefix: str,
    redis_url: str,
    redis_client: redis.Redis,
    start_emergency_worker: Any,
) -> None:
    """On Redis and on RabbitMQ."""
    queue = new_queue(broker)
    with producer_app(broker, redis_url, key_prefix, queue) as app:
        run_full_emergency(
            guard, app, broker, queue, key_prefix, redis_url, redis_client, start_emergency_worker
        )


def run_full_emergency(
    guard: MaintenanceGuard,
    app: Celery,
    redis_broker: Broker,
    queue: str,
    key_prefix: str,
    redis_url: str,
    redis_client: redis.Redis,
    start_emergency_worker: Any,
) -> None:
    worker = start_emergency_worker(redis_broker, queue, name=f"em-{queue}", concurrency=3)
    short_id = send(app, SHORT, "short", seconds=3)
    long_id = send(app, SLEEPY, "long", seconds=120, note={"why": "report"})
    other_id = send(app, UNRECOVERABLE, "other", seconds=120)
    wait_for(lambda: {"short", "long", "other"} <= set(started(redis_client, key_prefix)), 30)
    queued = [send(app, SHORT, f"queued{i}", seconds=0.05) for i in range(4)]
    wait_for(lambda: redis_broker.queue_length(queue) == 4, 10)

    session_prefix = f"{{{key_prefix}}}:session:"
    sessions_client = redis.Redis.from_url(redis_url)
    write_sessions(sessions_client, session_prefix)
    progress: list[tuple[str, int]] = []

    report = guard.emergency(
        "data leak",
        grace_period=5,
        kill_after=5,
        by="ops",
        celery_app=app,
        sessions=SessionInvalidator(sessions_client, session_prefix),
        progress=lambda phase, elapsed, total, left: progress.append((phase, left)),
    )

    assert guard.current().mode is MaintenanceMode.EMERGENCY
    assert report.phase == "done"
    assert [j["id"] for j in report.finished_in_grace] == [short_id]
    assert sorted(j.id for j in report.terminated) == sorted([long_id, other_id])
    assert all(j.signal == "SIGTERM" for j in report.terminated)
    assert report.not_stopped == []
    assert report.consumers_cancelled == {worker.hostname: [queue]}
    assert report.seconds_to_gone is not None
    assert ("grace", 3) in progress and progress[-1][1] == 0, progress
    # The task's SIGTERM cleanup ran; the long jobs never reached their end.
    assert redis_client.lrange(cleanup_key(key_prefix), 0, -1) == ["long"]
    assert "long" not in finished(redis_client, key_prefix)
    # Queued messages stayed in the broker.
    assert redis_broker.queue_length(queue) == 4
    # Non-admin sessions are gone, the admin's is kept.
    assert report.sessions is not None and report.sessions["invalidated"] == 4
    assert sorted(sessions_client.scan_iter(match=f"{session_prefix}*")) == [
        f"{session_prefix}admin".encode()
    ]

    records = {j.id: j for j in EmergencyRecords(guard.store).terminated()}
    long_rec = records[long_id]
    assert (long_rec.name, long_rec.operation, long_rec.recoverable) == (
        SLEEPY,
        "batch_operations",
        True,
    )
    assert long_rec.args == ["long"] and long_rec.kwargs == {
        "seconds": 120,
        "note": {"why": "report"},
    }
    assert long_rec.worker == worker.hostname and long_rec.pid > 0
    assert (
        long_rec.started_at
        and long_rec.terminated_at
        and long_rec.terminated_at > long_rec.started_at
    )
    assert records[other_id].recoverable is False

    # The terminated messages do not come back while the emergency lasts.
    time.sleep(1.0)  # give a wrongly requeued message time to show up; nothing to wait for
    assert started(redis_client, key_prefix).count("long") == 1
    assert redis_broker.queue_length(queue) == 4

    guard.disable(by="ops")

    # The worker consumes again: the queued jobs run, the terminated ones do not.
    wait_for(
        lambda: {f"queued{i}" for i in range(4)} <= set(finished(redis_client, key_prefix)), 30
    )
    assert redis_broker.queue_length(queue) == 0
    checks = EmergencyRecords(guard.store).checks()
    assert checks is not None and checks["ok"], checks
    assert checks["workers_resumed"] == [worker.hostname]
    assert started(redis_client, key_prefix).count("long") == 1
    assert started(redis_client, key_prefix).count("other") == 1
    assert queued  # ids kept for the failure message

    # Two recovers at once: the recoverable job is re-enqueued exactly once.
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def run_recover() -> None:
        barrier.wait()
        results.append(recover(guard, app, by="ops"))

    threads = [threading.Thread(target=run_recover) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    recovered = [r for res in results for r in res.recovered]
    assert [r["id"] for r in recovered] == [long_id]
    assert all([j["id"] for j in res.not_recoverable] == [other_id] for res in results)
    wait_for(lambda: started(redis_client, key_prefix).count("long") == 2, 30)
    time.sleep(0.5)  # a duplicate would start right away; nothing to wait for
    assert started(redis_client, key_prefix).count("long") == 2
    assert started(redis_client, key_prefix).count("other") == 1

    overview = build_report(guard).to_dict()
    assert overview["emergency"]["id"] == report.id
    assert overview["recovery"][long_id]["state"] == "recovered"
    assert overview["deactivated"]["by"] == "ops"
    types = [e["type"] for e in overview["timeline"]]
    for expected in (
        "emergency_activated",
        "sessions_invalidated",
        "consumers_cancelled",
        "jobs_revoked",
        "emergency_completed",
        "disabled",
        "emergency_checks",
        "jobs_recovered",
    ):
        assert expected in types, types
    # What a notification of the grace's end says: each job, and whether it can be recovered.
    revoked = next(e for e in guard.events(limit=200) if e.type == "jobs_revoked")
    stopped = {j["id"]: j for j in json.loads(revoked.fields["terminated"])}
    assert stopped[long_id]["recoverable"] is True
    assert stopped[other_id]["recoverable"] is False
    assert stopped[long_id]["task"]


def test_a_job_that_ignores_sigterm_is_killed_after_kill_after(
    app: Celery,
    guard: MaintenanceGuard,
    redis_broker: Broker,
    queue: str,
    key_prefix: str,
    redis_client: redis.Redis,
    start_emergency_worker: Any,
) -> None:
    start_emergency_worker(redis_broker, queue, name=f"em-{queue}", concurrency=2)
    stubborn_id = send(app, STUBBORN, "stubborn", seconds=120)
    wait_for(lambda: "stubborn" in started(redis_client, key_prefix), 30)

    report = guard.emergency("leak", grace_period=1, kill_after=1, by="ops", celery_app=app)

    assert [(j.id, j.signal) for j in report.terminated] == [(stubborn_id, "SIGKILL")]
    assert report.not_stopped == []
    assert "stubborn" not in finished(redis_client, key_prefix)
    # Killed by the emergency, not lost: the worker's main process, which saw its pool
    # process die, does not record it as lost (it would within a few ms if it did).
    time.sleep(1.0)
    assert InflightRegistry(guard.store).lost() == []
    guard.disable(by="ops")


def test_a_redelivered_message_of_a_terminated_job_is_dropped_by_a_fresh_worker(
    app: Celery,
    guard: MaintenanceGuard,
    redis_broker: Broker,
    queue: str,
    key_prefix: str,
    redis_client: redis.Redis,
    start_emergency_worker: Any,
) -> None:
    first = start_emergency_worker(redis_broker, queue, name=f"em1-{queue}", concurrency=2)
    long_id = send(app, SLEEPY, "long", seconds=120)
    wait_for(lambda: "long" in started(redis_client, key_prefix), 30)
    report = guard.emergency("leak", grace_period=1, kill_after=2, by="ops", celery_app=app)
    assert [j.id for j in report.terminated] == [long_id]
    first.stop()
    guard.disable(by="ops")

    # The broker hands the same message out again (as after a lost worker with
    # acks_late + task_reject_on_worker_lost): same task id, same body.
    app.send_task(SLEEPY, args=["long"], kwargs={"seconds": 0.1}, task_id=long_id)
    start_emergency_worker(redis_broker, queue, name=f"em2-{queue}", concurrency=2)

    skipped_key = EmergencyRecords(guard.store).skipped_key
    wait_for(lambda: redis_client.hexists(skipped_key, long_id), 30)
    assert redis_broker.queue_length(queue) == 0
    assert started(redis_client, key_prefix).count("long") == 1


def test_emergency_without_waiting_returns_at_once_and_finishes_in_background(
    app: Celery,
    guard: MaintenanceGuard,
    redis_broker: Broker,
    queue: str,
    key_prefix: str,
    redis_client: redis.Redis,
    start_emergency_worker: Any,
) -> None:
    start_emergency_worker(redis_broker, queue, name=f"em-{queue}", concurrency=2)
    long_id = send(app, SLEEPY, "long", seconds=120)
    wait_for(lambda: "long" in started(redis_client, key_prefix), 30)

    report = guard.emergency("leak", grace_period=1, kill_after=2, celery_app=app, wait=False)

    assert report.phase == "grace" and report.terminated == []
    assert guard.current().mode is MaintenanceMode.EMERGENCY
    records = EmergencyRecords(guard.store)
    wait_for(lambda: (records.report() or {}).get("phase") == "done", 30)
    stored = records.report()
    assert stored is not None
    assert [j["id"] for j in stored["terminated"]] == [long_id]
    guard.disable()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reason": ""},
        {"reason": "x", "grace_period": -1},
        {"reason": "x", "grace_period": "soon"},
        {"reason": "x", "grace_period": 3601},
        {"reason": "x", "kill_after": 601},
        {"reason": "x", "sessions": True},
    ],
)
def test_bad_emergency_arguments_are_refused_and_change_nothing(
    guard: MaintenanceGuard, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInput):
        guard.emergency(**kwargs)
    assert not guard.current().is_active
    assert guard.events() == []


def test_cli_emergency_then_two_concurrent_cli_recovers_re_enqueue_exactly_once(
    app: Celery,
    guard: MaintenanceGuard,
    redis_broker: Broker,
    queue: str,
    key_prefix: str,
    redis_url: str,
    redis_client: redis.Redis,
    start_emergency_worker: Any,
) -> None:
    start_emergency_worker(redis_broker, queue, name=f"em-{queue}", concurrency=2)
    long_id = send(app, SLEEPY, "long", seconds=120)
    other_id = send(app, UNRECOVERABLE, "other", seconds=120)
    wait_for(lambda: {"long", "other"} <= set(started(redis_client, key_prefix)), 30)
    env = emergency_env(redis_url, key_prefix, redis_broker, queue)
    cli = [sys.executable, "-c", "from maintenance_guard.cli import main; main()"]
    app_arg = ["--app", "tests.integration.emergency_support:app"]

    done = subprocess.run(
        cli
        + [
            "emergency",
            "--reason",
            "leak",
            "--grace",
            "1",
            "--kill-after",
            "2",
            "--by",
            "ops",
            "--no-sessions",
            "--json",
        ]
        + app_arg,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert sorted(j["id"] for j in printed["terminated"]) == sorted([long_id, other_id])

    refused = subprocess.run(
        cli + ["recover"] + app_arg, env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "disable" in refused.stderr
    assert subprocess.run(cli + ["disable", "--by", "ops"], env=env, timeout=60).returncode == 0

    procs = [
        subprocess.Popen(
            cli + ["recover", "--json"] + app_arg,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    recovered = [r["id"] for out in outputs for r in out["recovered"]]
    assert recovered == [long_id]
    wait_for(lambda: started(redis_client, key_prefix).count("long") == 2, 30)

    text = subprocess.run(cli + ["report"], env=env, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0, text.stderr
    assert "leak" in text.stdout and long_id in text.stdout and "recovered" in text.stdout


def test_a_worker_started_during_an_emergency_consumes_nothing_until_it_ends(
    guard: MaintenanceGuard,
    broker: Broker,
    redis_url: str,
    key_prefix: str,
    redis_client: redis.Redis,
    start_emergency_worker: Any,
) -> None:
    """On Redis and on RabbitMQ."""
    chosen = broker
    queue = new_queue(chosen)
    with producer_app(chosen, redis_url, key_prefix, queue) as app:
        for i in range(3):
            send(app, SHORT, f"queued{i}", seconds=0.05)
        wait_for(lambda: chosen.queue_length(queue) == 3, 10)
        report = guard.emergency("leak", grace_period=0, kill_after=0, celery_app=app)
        assert "no Celery worker answered" in " ".join(report.warnings)

        worker = start_emergency_worker(chosen, queue, name=f"late-{queue}", concurrency=2)

        records = EmergencyRecords(guard.store)
        wait_for(lambda: worker.hostname in records.cancelled(), 30)
        ping = app.control.ping(destination=[worker.hostname], timeout=2)
        assert ping  # the worker is up and answering, yet consumes nothing
        assert chosen.queue_length(queue) == 3
        assert started(redis_client, key_prefix) == []

        guard.disable(by="ops")
        wait_for(lambda: len(finished(redis_client, key_prefix)) == 3, 30)
        assert chosen.queue_length(queue) == 0
        checks = records.checks()
        assert checks is not None and checks["ok"], checks


def test_deactivation_checks_warn_about_a_dead_worker_and_leftover_in_flight_records(
    app: Celery,
    guard: MaintenanceGuard,
    redis_broker: Broker,
    queue: str,
    key_prefix: str,
    redis_client: redis.Redis,
    start_emergency_worker: Any,
) -> None:
    worker = start_emergency_worker(redis_broker, queue, name=f"em-{queue}", concurrency=2)
    long_id = send(app, SLEEPY, "long", seconds=120)
    wait_for(lambda: "long" in started(redis_client, key_prefix), 30)
    report = guard.emergency("leak", grace_period=0, kill_after=2, celery_app=app)
    assert [j.id for j in report.terminated] == [long_id]
    worker.kill()  # a power loss: this worker will never consume again
    registry = InflightRegistry(guard.store)
    registry.start(InflightJob(long_id, SLEEPY, "batch_operations", worker.hostname, 1, 0.0))

    guard.disable(by="ops")

    checks = EmergencyRecords(guard.store).checks()
    assert checks is not None and not checks["ok"]
    text = " | ".join(checks["warnings"])
    assert f"worker {worker.hostname} does not consume again" in text
    assert f"in-flight records of terminated jobs remained (removed): {long_id}" in text
    assert long_id not in {j.id for j in registry.jobs()}
    warnings = [e for e in guard.events(limit=100) if e.type == "emergency_warning"]
    assert len(warnings) >= 2


@pytest.mark.parametrize(
    "args",
    [
        ["--reason", ""],
        ["--reason", "x", "--grace", "-1"],
        ["--reason", "x", "--grace", "soon"],
        ["--reason", "x", "--kill-after", "601"],
        ["--reason", "x", "--app", "no_such_module_mg:app"],
        ["--reason", "x", "--session-prefix", ""],
    ],
)
def test_cli_emergency_refuses_bad_input_with_exit_2_and_changes_nothing(
    guard: MaintenanceGuard, cli_env: dict[str, str], args: list[str]
) -> None:
    cli = [sys.executable, "-c", "from maintenance_guard.cli import main; main()"]
    done = subprocess.run(
        cli + ["emergency", *args], env=cli_env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("Error:")
    guard.refresh()
    assert not guard.current().is_active
    assert guard.events() == []


def test_a_second_emergency_while_the_first_lasts_still_lets_workers_resume_after(
    app: Celery,
    guard: MaintenanceGuard,
    redis_broker: Broker,
    queue: str,
    key_prefix: str,
    redis_client: redis.Redis,
    start_emergency_worker: Any,
) -> None:
    worker = start_emergency_worker(redis_broker, queue, name=f"em-{queue}", concurrency=2)
    first = guard.emergency("leak", grace_period=0, kill_after=0, celery_app=app)
    assert first.consumers_cancelled == {worker.hostname: [queue]}
    second = guard.emergency("leak, still", grace_period=0, kill_after=0, celery_app=app)
    assert second.consumers_cancelled == {worker.hostname: []}  # nothing left to pause
    assert [q.name for q in EmergencyRecords(guard.store).cancelled()[worker.hostname]] == [queue]

    guard.disable(by="ops")

    checks = EmergencyRecords(guard.store).checks()
    assert checks is not None and checks["ok"], checks
    send(app, SHORT, "after", seconds=0.05)
    wait_for(lambda: "after" in finished(redis_client, key_prefix), 30)


def test_emergency_with_the_broker_down_still_switches_and_says_nothing_was_revoked(
    guard: MaintenanceGuard,
) -> None:
    from maintenance_guard.inflight import InflightRegistry

    unreachable = Celery("mg-down", broker="redis://127.0.0.1:1/0", set_as_current=False)
    # A worker of this app registered before the broker went down: the emergency must
    # reach it through the broker, and cannot.
    InflightRegistry(guard.store).register_worker("down@host", {"pid": 1})
    try:
        report = guard.emergency("leak", grace_period=0, celery_app=unreachable, sessions=False)
    finally:
        unreachable.close()
    assert guard.current().mode is MaintenanceMode.EMERGENCY
    assert report.phase == "done" and report.terminated == []
    assert any("cannot reach the Celery workers" in w for w in report.warnings)
    assert "emergency_warning" in [e.type for e in guard.events()]
