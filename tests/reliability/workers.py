"""Real prefork Celery workers for the reliability suite (acks_late optional).

Reuses the Celery helper's test app and `WorkerProcess`; adds ``acks_late`` and a choice
of worker name, so a test can kill a worker and start another on the same queue.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from maintenance_guard import MaintenanceGuard
from tests.integration.celery_support import (
    AMQP_URL,
    Broker,
    WorkerProcess,
    amqp_available,
    make_app,
    spawn_worker,
    uninstall,
    worker_env,
)

StartRelWorker = Callable[..., WorkerProcess]


@pytest.fixture
def rel_worker(tmp_path: Path, key_prefix: str, redis_url: str) -> Iterator[StartRelWorker]:
    """Factory: ``rel_worker(broker, queue, name=..., acks_late=..., **guard_conf)`` starts a
    prefork worker and waits until it registered; every worker is stopped afterwards."""
    started: list[WorkerProcess] = []

    def start(
        broker: Broker,
        queue: str,
        *,
        name: str,
        acks_late: bool = False,
        concurrency: int = 2,
        **guard_conf: Any,
    ) -> WorkerProcess:
        hostname = f"{name}@{socket.gethostname()}"
        env = worker_env(broker, redis_url, key_prefix, queue, guard_conf)
        env["MG_REL_ACKS_LATE"] = "1" if acks_late else "0"
        worker = spawn_worker(
            "tests.reliability.worker_app",
            queue,
            hostname,
            concurrency=concurrency,
            env=env,
            log_path=tmp_path / f"rel-worker-{len(started)}.log",
            redis_url=redis_url,
            key_prefix=key_prefix,
        )
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


@pytest.fixture
def amqp_broker(redis_url: str, cleanup_after_test: list[Callable[[], None]]) -> Broker:
    """The real RabbitMQ (skips when it is not running); test queues deleted after the test."""
    if not amqp_available():
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    found = Broker("amqp", AMQP_URL, redis_url)
    cleanup_after_test.append(found.cleanup)
    return found


@pytest.fixture
def producers(
    make_guard: Callable[..., MaintenanceGuard], key_prefix: str, redis_url: str
) -> Iterator[Callable[..., Celery]]:
    """Factory for producer apps in the test process: guarded (own guard) or not."""
    made: list[Celery] = []

    def make(broker: Broker, queue: str, *, guarded: bool = True) -> Celery:
        app = make_app(
            broker=broker.url,
            redis_url=redis_url,
            prefix=key_prefix,
            queue=queue,
            guard=make_guard() if guarded else None,
            guarded=guarded,
        )
        made.append(app)
        return app

    yield make
    for app in made:
        uninstall(app)
