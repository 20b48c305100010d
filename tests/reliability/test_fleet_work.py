"""Work on a faulty fleet: admin submissions, drain, a hung state store, job counts.

Real prefork workers on a Redis broker; the state store is a private redis-server where
a test stops or hangs it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import redis
from celery import Celery

from maintenance_guard import MaintenanceGuard
from maintenance_guard.celery import installation_of
from maintenance_guard.deferred import DeferredQueue
from maintenance_guard.inflight import InflightRegistry
from tests.conftest import RedisServer
from tests.helpers import wait_for
from tests.integration.celery_support import Broker, redis_broker
from tests.reliability.fleet_app import (
    CAPTION,
    LONG,
    READ,
    SHORT,
    Fleet,
    conf,
    finished,
    fleet,
    sees,
    send,
    started,
)

__all__ = ["conf", "fleet", "redis_broker"]  # fixtures used by name


def test_an_admins_submission_runs_on_the_worker_and_a_forged_stamp_does_not(
    fleet: Fleet,
    conf: dict[str, Any],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
) -> None:
    fleet.worker("fleet-admin", **conf)
    app = fleet.producer(**conf)
    guard.enable("normal", reason="upgrade", by="ops")
    sees(app, True)

    with MaintenanceGuard.admin_bypass():
        send(app, CAPTION, "admin")
    # A producer without the guard copies the headers an admin message carries.
    bare = Celery("bare", broker=conf["broker"], set_as_current=False)
    try:
        bare.send_task(
            CAPTION,
            args=["forged"],
            queue=conf["queue"],
            headers={"mg_admin": "0" * 40, "mg_published_at": repr(time.time()), "mg_guarded": "1"},
        )
    finally:
        bare.close()

    wait_for(lambda: "admin" in finished(redis_client, conf["prefix"]), 30)
    deferred = DeferredQueue(guard.store)
    wait_for(lambda: [e.payload.get("headers", {}).get("mg_admin") for e in deferred.entries()]
             == ["0" * 40], 30)  # fmt: skip
    assert "forged" not in started(redis_client, conf["prefix"])

    # The admin's counted as an admin's; only the forged one as a refusal.
    def counted(kind: str) -> int:
        ops = guard.attempt_counts().get(kind, {})
        return int(ops.get("caption_generation", {}).get("worker", 0))

    wait_for(lambda: counted("admin") == 1 and counted("blocked") == 1, 10)
    guard.disable(by="ops")
    wait_for(lambda: "forged" in finished(redis_client, conf["prefix"]), 30)


def test_drain_holds_back_queued_blocked_work_so_nothing_starts_after_it_says_drained(
    fleet: Fleet,
    conf: dict[str, Any],
    redis_broker: Broker,
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
) -> None:
    app = fleet.producer(**conf)
    tokens = [f"q{i:03d}" for i in range(150)]
    for token in tokens:  # published before maintenance
        send(app, SHORT, token, seconds=0.03)
    fleet.worker("fleet-drain", concurrency=2, **conf)
    wait_for(lambda: len(started(redis_client, conf["prefix"])) >= 5, 30)
    guard.enable("normal", reason="migration", by="ops")

    result = guard.drain(timeout=60)
    assert result.drained and result.held, result
    ran = len(started(redis_client, conf["prefix"]))
    assert ran < len(tokens)  # the rest are held back, not run
    time.sleep(1.5)  # anything still able to start would start now
    assert len(started(redis_client, conf["prefix"])) == ran
    # Newest first: the drain said it completed, after it held the queued work back.
    assert [e.type for e in guard.events(limit=2)] == ["drain_completed", "drain_hold"]

    guard.disable(by="ops")
    wait_for(lambda: len(finished(redis_client, conf["prefix"])) == len(tokens), 60)
    time.sleep(0.5)
    assert sorted(started(redis_client, conf["prefix"])) == tokens  # each exactly once


def test_drain_reports_a_job_whose_worker_died_under_it(
    fleet: Fleet,
    conf: dict[str, Any],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    cli_env: dict[str, str],
) -> None:
    quick = {**conf, "heartbeat": (0.2, 1.5)}
    worker = fleet.worker("fleet-dies", **quick)
    app = fleet.producer(**quick)
    job = send(app, LONG, "long", seconds=60)
    wait_for(lambda: "long" in started(redis_client, conf["prefix"]), 30)
    guard.enable("normal", reason="migration", by="ops")
    worker.kill()

    done = subprocess.run(
        [sys.executable, "-m", "maintenance_guard.cli", "drain", "--timeout", "30"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 4, (done.stdout, done.stderr)
    assert "Drained" in done.stdout
    assert f"Lost: {job}" in done.stderr and "worker died" in done.stderr


def test_status_counts_jobs_in_flight_while_maintenance_is_off(
    fleet: Fleet,
    conf: dict[str, Any],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    cli_env: dict[str, str],
) -> None:
    fleet.worker("fleet-count", **conf)
    app = fleet.producer(**conf)
    send(app, LONG, "long", seconds=30)
    wait_for(lambda: "long" in started(redis_client, conf["prefix"]), 30)
    wait_for(lambda: guard.status().active_jobs_count == 1, 10)
    assert not guard.current().is_active
    cli = [sys.executable, "-m", "maintenance_guard.cli", "status"]
    text = subprocess.run(cli, env=cli_env, capture_output=True, text=True, timeout=60)
    assert "Maintenance: OFF" in text.stdout and "In-flight jobs: 1" in text.stdout
    as_json = subprocess.run(
        [*cli, "--json"], env=cli_env, capture_output=True, text=True, timeout=60
    )
    assert '"active_jobs_count": 1' in as_json.stdout


def test_a_hung_state_redis_does_not_stall_the_worker(
    fleet: Fleet,
    conf: dict[str, Any],
    private_redis: RedisServer,
    redis_client: redis.Redis,
) -> None:
    # The guard's state on a private server that hangs (SIGSTOP: connections are accepted,
    # nothing answers); the tasks record their runs and results in the suite's Redis.
    hanging = {**conf, "state_url": private_redis.url}
    fleet.worker("fleet-hang", concurrency=2, **hanging)
    app = fleet.producer(**hanging)
    send(app, READ, "warm-up")
    wait_for(lambda: "warm-up" in finished(redis_client, conf["prefix"]), 30)
    registry = InflightRegistry(installation_of(app).guard.store)  # type: ignore[union-attr]
    assert private_redis.process is not None
    os.kill(private_redis.process.pid, signal.SIGSTOP)
    try:
        tokens = [f"t{i}" for i in range(200)]
        for token in tokens:
            send(app, READ, token)
        # With two ~2 s socket timeouts per task (the in-flight writes on the task's path),
        # 200 tasks would take minutes; they must finish while Redis still hangs.
        wait_for(lambda: set(tokens) <= set(finished(redis_client, conf["prefix"])), 8)
    finally:
        os.kill(private_redis.process.pid, signal.SIGCONT)
    # Once Redis answers, the bookkeeping catches up: nothing is left in flight.
    wait_for(lambda: registry.jobs() == [], 15)


def test_drain_wait_lets_queued_blocked_work_run_and_returns_after_all_of_it(
    fleet: Fleet,
    conf: dict[str, Any],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
) -> None:
    app = fleet.producer(**conf)
    tokens = [f"w{i:03d}" for i in range(60)]
    for token in tokens:  # published before maintenance
        send(app, SHORT, token, seconds=0.03)
    fleet.worker("fleet-drain-wait", concurrency=2, **conf)
    wait_for(lambda: len(started(redis_client, conf["prefix"])) >= 5, 30)
    guard.enable("normal", reason="migration", by="ops")

    result = guard.drain(timeout=60, queued="wait", celery_app=app)
    assert result.drained and not result.held, result
    # Nothing was left to start: every job queued before maintenance has run.
    assert sorted(finished(redis_client, conf["prefix"])) == tokens
