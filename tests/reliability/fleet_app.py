"""A Celery app for the fleet-correctness tests, built the same way in the test process
(producers) and in real prefork worker subprocesses.

Unlike the integration test app, everything a test varies is a parameter: the state
store (which a test may stop, hang or restart) is separate from the Redis the tasks
record their runs in and that holds results, the remote-control exchange can be shared by
two apps, and prefetch and ``acks_late`` are set per app. In a worker subprocess the
``MG_FLEET`` environment variable (JSON of `make_fleet_app`'s keyword arguments) builds
the module's ``app``.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from maintenance_guard import MaintenanceGuard
from maintenance_guard.celery import GuardedTask, cleanup_on_terminate, install, installation_of
from tests.conftest import ROOT
from tests.helpers import wait_for
from tests.integration.celery_support import Broker, WorkerProcess, new_queue, spawn_worker

LONG = "fleet.long"
SHORT = "fleet.short"
CAPTION = "fleet.caption"
READ = "fleet.read"


def started_key(prefix: str) -> str:
    return f"{{{prefix}}}:fleet:started"


def finished_key(prefix: str) -> str:
    return f"{{{prefix}}}:fleet:finished"


def cleanup_key(prefix: str) -> str:
    return f"{{{prefix}}}:fleet:cleanup"


def make_fleet_app(
    *,
    broker: str,
    state_url: str,
    runs_url: str,
    prefix: str,
    queue: str,
    control: str | None = None,
    prefetch: int = 1,
    acks_late: bool = False,
    poll: float = 0.2,
    heartbeat: tuple[float, float] = (5.0, 30.0),
    guard: MaintenanceGuard | None = None,
) -> Celery:
    """The app, with the guard installed (``guard``, else one from the app's config).
    ``heartbeat`` is the in-flight heartbeat (interval, timeout)."""
    app = Celery(f"fleet-{queue}", set_as_current=False)
    app.conf.update(
        broker_url=broker,
        result_backend=runs_url,
        result_expires=600,
        result_backend_transport_options={"global_keyprefix": f"{{{prefix}}}:"},
        control_exchange=control or f"mgctl-{queue}",
        task_default_queue=queue,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=3,
        worker_prefetch_multiplier=prefetch,
        task_acks_late=acks_late,
        worker_hijack_root_logger=False,
        maintenance_guard_redis_url=state_url,
        maintenance_guard_key_prefix=prefix,
        maintenance_guard_poll_interval=poll,
        maintenance_guard_heartbeat_interval=heartbeat[0],
        maintenance_guard_heartbeat_timeout=heartbeat[1],
        maintenance_guard_task_operations={"fleet.short": "job_creation", "fleet.read": "read"},
    )
    client = redis.Redis.from_url(runs_url, decode_responses=True)

    def run(token: str, seconds: float) -> str:
        client.rpush(started_key(prefix), token)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.02)
        client.rpush(finished_key(prefix), token)
        return token

    @app.task(
        name=LONG, base=GuardedTask, operation="batch_operations", recoverable=True, shared=False
    )
    def long(token: str, seconds: float = 60.0) -> str:
        with cleanup_on_terminate(lambda: client.rpush(cleanup_key(prefix), token)):
            return run(token, seconds)

    @app.task(name=SHORT, shared=False)
    def short(token: str, seconds: float = 0.0) -> str:
        return run(token, seconds)

    @app.task(name=CAPTION, base=GuardedTask, operation="caption_generation", shared=False)
    def caption(token: str) -> str:
        return run(token, 0.0)

    @app.task(name=READ, shared=False)
    def read(token: str) -> str:
        return run(token, 0.0)

    install(app, guard)
    return app


def started(client: redis.Redis, prefix: str) -> list[str]:
    return list(client.lrange(started_key(prefix), 0, -1))


def finished(client: redis.Redis, prefix: str) -> list[str]:
    return list(client.lrange(finished_key(prefix), 0, -1))


def send(app: Celery, name: str, token: str, **kwargs: Any) -> str:
    """Publish ``name(token, **kwargs)`` under a task id that starts with the token."""
    task_id = f"{token}-{uuid.uuid4().hex[:6]}"
    app.send_task(name, args=[token], kwargs=kwargs, task_id=task_id)
    return task_id


@dataclass
class Fleet:
    """Starts workers of fleet apps and stops them (and the producer apps) afterwards."""

    tmp_path: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    apps: list[Celery] = field(default_factory=list)

    def producer(self, **conf: Any) -> Celery:
        """A fleet app in this process (a producer; ``conf`` as for `make_fleet_app`)."""
        app = make_fleet_app(**conf)
        self.apps.append(app)
        return app

    def worker(self, name: str, *, concurrency: int = 2, **conf: Any) -> WorkerProcess:
        """A real prefork worker of the fleet app ``conf`` describes, once registered."""
        conf.pop("guard", None)
        env = dict(os.environ)
        env["MG_FLEET"] = json.dumps(conf)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        worker = spawn_worker(
            "tests.reliability.fleet_app",
            conf["queue"],
            f"{name}@{socket.gethostname()}",
            concurrency=concurrency,
            env=env,
            log_path=self.tmp_path / f"fleet-{name}-{len(self.workers)}.log",
            redis_url=conf["state_url"],
            key_prefix=conf["prefix"],
        )
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        from maintenance_guard.celery import installation_of
        from tests.integration.celery_support import uninstall

        for app in self.apps:
            inst = installation_of(app)
            uninstall(app)
            if inst is not None:
                inst.guard.stop(timeout=2)
            app.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet(tmp_path)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def conf(redis_broker: Broker, redis_url: str, key_prefix: str) -> dict[str, Any]:
    """One fleet app's settings: its own queue on the Redis broker, the suite's Redis as
    state store and run log, the test's key prefix."""
    return {
        "broker": redis_broker.url,
        "state_url": redis_url,
        "runs_url": redis_url,
        "prefix": key_prefix,
        "queue": new_queue(redis_broker),
    }


def sees(app: Celery, active: bool) -> None:
    """Wait until the guard of ``app`` (in this process) sees maintenance on or off."""
    inst = installation_of(app)
    assert inst is not None
    wait_for(lambda: inst.guard.current().is_active is active, 10)


if os.environ.get("MG_FLEET"):
    app = make_fleet_app(**json.loads(os.environ["MG_FLEET"]))
