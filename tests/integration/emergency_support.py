"""Emergency test support: an app with long tasks, and real prefork worker subprocesses.

Imported by the tests (fixtures, `make_emergency_app`) and by ``celery -A
tests.integration.emergency_support worker`` in a subprocess, where the ``MG_EM_*``
environment describes the app (then the module has an ``app``). Each test app has its
own queue and its own remote-control exchange, so broadcasts (pause, revoke, kill) reach
only this test's workers.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from maintenance_guard.celery import GuardedTask, cleanup_on_terminate
from tests.integration.celery_support import Broker, WorkerProcess, make_app, spawn_worker

ROOT = Path(__file__).resolve().parents[2]

SLEEPY = "mgtest.emergency.sleepy"
UNRECOVERABLE = "mgtest.emergency.unrecoverable"
STUBBORN = "mgtest.emergency.stubborn"
SHORT = "mgtest.emergency.short"


def started_key(prefix: str) -> str:
    """Redis list of tokens whose task started (one entry per execution)."""
    return f"{{{prefix}}}:test:em:started"


def finished_key(prefix: str) -> str:
    """Redis list of tokens whose task ran to the end."""
    return f"{{{prefix}}}:test:em:finished"


def cleanup_key(prefix: str) -> str:
    """Redis list of tokens whose SIGTERM cleanup ran."""
    return f"{{{prefix}}}:test:em:cleanup"


def make_emergency_app(*, broker: str, redis_url: str, prefix: str, queue: str) -> Celery:
    """The celery_support test app plus long-running emergency tasks, guard installed."""
    app = make_app(broker=broker, redis_url=redis_url, prefix=prefix, queue=queue)
    app.conf.control_exchange = f"mgctl-{queue}"
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    def run(token: str, seconds: float) -> str:
        client.rpush(started_key(prefix), token)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.02)
        client.rpush(finished_key(prefix), token)
        return token

    late = {"acks_late": True, "reject_on_worker_lost": True}

    @app.task(
        name=SLEEPY,
        base=GuardedTask,
        operation="batch_operations",
        recoverable=True,
        shared=False,
        **late,
    )
    def sleepy(token: str, seconds: float = 60.0, note: dict[str, Any] | None = None) -> str:
        with cleanup_on_terminate(lambda: client.rpush(cleanup_key(prefix), token)):
            return run(token, seconds)

    @app.task(
        name=UNRECOVERABLE, base=GuardedTask, operation="platform_operations", shared=False, **late
    )
    def unrecoverable(token: str, seconds: float = 60.0) -> str:
        return run(token, seconds)

    @app.task(name=STUBBORN, base=GuardedTask, operation="batch_operations", shared=False, **late)
    def stubborn(token: str, seconds: float = 60.0) -> str:
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            return run(token, seconds)
        finally:
            signal.signal(signal.SIGTERM, previous)

    @app.task(name=SHORT, base=GuardedTask, operation="job_creation", shared=False, **late)
    def short(token: str, seconds: float = 0.2) -> str:
        return run(token, seconds)

    # install() (called by make_app) connected the emergency worker hooks.
    assert getattr(app, "_mg_emergency_hooks", False)
    return app


def started(client: redis.Redis, prefix: str) -> list[str]:
    return list(client.lrange(started_key(prefix), 0, -1))


def finished(client: redis.Redis, prefix: str) -> list[str]:
    return list(client.lrange(finished_key(prefix), 0, -1))


StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def start_emergency_worker(
    tmp_path: Path, key_prefix: str, redis_url: str
) -> Iterator[StartWorker]:
    """Factory: a real prefork worker of the emergency app on ``queue``; stopped afterwards."""
    workers: list[WorkerProcess] = []

    def start(broker: Broker, queue: str, *, name: str, concurrency: int = 3) -> WorkerProcess:
        hostname = f"{name}@{socket.gethostname()}"
        env = dict(os.environ)
        env.pop("MG_WORKER_PREFIX", None)
        env.update(
            MG_EM_BROKER=broker.url,
            MG_EM_REDIS_URL=redis_url,
            MG_EM_PREFIX=key_prefix,
            MG_EM_QUEUE=queue,
            PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        worker = spawn_worker(
            "tests.integration.emergency_support",
            queue,
            hostname,
            concurrency=concurrency,
            env=env,
            log_path=tmp_path / f"em-worker-{len(workers)}.log",
            redis_url=redis_url,
            key_prefix=key_prefix,
        )
        workers.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in workers:
            worker.stop()


def emergency_env(redis_url: str, key_prefix: str, broker: Broker, queue: str) -> dict[str, str]:
    """Environment for a CLI process that loads this module's ``app`` (``--app``)."""
    env = dict(os.environ)
    env.pop("MG_WORKER_PREFIX", None)
    env.update(
        MG_EM_BROKER=broker.url,
        MG_EM_REDIS_URL=redis_url,
        MG_EM_PREFIX=key_prefix,
        MG_EM_QUEUE=queue,
        MAINTENANCE_GUARD_REDIS_URL=redis_url,
        MAINTENANCE_GUARD_KEY_PREFIX=key_prefix,
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


if os.environ.get("MG_EM_PREFIX"):
    app = make_emergency_app(
        broker=os.environ["MG_EM_BROKER"],
        redis_url=os.environ["MG_EM_REDIS_URL"],
        prefix=os.environ["MG_EM_PREFIX"],
        queue=os.environ["MG_EM_QUEUE"],
    )
