"""The Celery app of the publish and worker benchmarks, bare or with the guard installed.

``MGBENCH_GUARDED=1`` installs the guard (key prefix ``$MGBENCH_PREFIX``) and makes
``bench.noop`` a `GuardedTask` of operation ``caption_generation``; otherwise it is a plain
task on a plain app. Broker: the benchmark Redis. Results are ignored (no backend).
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

from .common import redis_url

GUARDED = os.environ.get("MGBENCH_GUARDED") == "1"
PREFIX = os.environ.get("MGBENCH_PREFIX", "mgbench-celery")

app = Celery("mgbench", broker=redis_url())
app.conf.update(
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=16,
    broker_connection_retry_on_startup=True,
    task_default_queue=f"{PREFIX}-default",
)

task_options: dict[str, object] = {"name": "bench.noop"}
if GUARDED:
    from maintenance_guard import MaintenanceGuard
    from maintenance_guard.celery import GuardedTask, install

    # MGBENCH_STATE_URL: the guard's state on another Redis (bench_hung_state stops it).
    state_url = os.environ.get("MGBENCH_STATE_URL") or redis_url()
    guard = MaintenanceGuard.from_url(state_url, key_prefix=PREFIX)
    install(app, guard)
    task_options.update(base=GuardedTask, operation="caption_generation")


@app.task(**task_options)  # type: ignore[misc]
def noop() -> None:
    """Does nothing: the benchmark measures what surrounds a task."""


_marks = redis.Redis.from_url(redis_url())


@app.task(name="bench.mark")  # type: ignore[misc]
def mark(key: str) -> None:
    """Stamp the time this task ran at ``key`` (start and end markers of a batch)."""
    _marks.set(key, repr(time.time()), ex=600)


@app.task(name="bench.work")  # type: ignore[misc]
def work(seconds: float, key: str) -> None:
    """Sleep ``seconds``, then stamp the moment this job ends at list ``key`` (drain)."""
    time.sleep(seconds)
    _marks.rpush(key, repr(time.time()))
    _marks.expire(key, 600)


@app.task(name="bench.probe", bind=True)  # type: ignore[misc]
def probe(self: object, sent: float, key: str) -> None:
    """Record ``sent started worker`` at list ``key`` (queue pause: when consumption
    stopped and restarted)."""
    hostname = getattr(getattr(self, "request", None), "hostname", "") or ""
    _marks.rpush(key, f"{sent!r} {time.time()!r} {hostname}")
    _marks.expire(key, 600)
