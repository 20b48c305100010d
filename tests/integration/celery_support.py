"""Celery test support: a test app, real worker subprocesses, broker queue lengths.

Imported two ways: by the tests (fixtures, `make_app`), and by ``celery -A
tests.integration.celery_support worker`` in a subprocess, where the ``MG_WORKER_*``
environment describes the app to build (then the module has an ``app``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from maintenance_guard import MaintenanceGuard
from maintenance_guard.celery import GuardedTask, install, installation_of
from tests.cleanup import AMQP_URL, amqp_available, delete_amqp_queues, delete_redis_queues
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]

TASK_PATTERNS = {
    "mgtest.caption*": "caption_generation",
    "mgtest.read": "read",
    "mgtest.collect": "caption_generation",
    "mgtest.retrying": "job_creation",
    "mgtest.spin": "batch_operations",
}


def runs_key(prefix: str) -> str:
    """Redis list where test tasks record each run (one entry per execution)."""
    return f"{{{prefix}}}:test:runs"


def flag_key(prefix: str, token: str) -> str:
    """A key a test sets to let a waiting task continue."""
    return f"{{{prefix}}}:test:flag:{token}"


def make_app(
    *,
    broker: str,
    redis_url: str,
    prefix: str,
    queue: str,
    guard: MaintenanceGuard | None = None,
    guarded: bool = True,
    celery_conf: dict[str, Any] | None = None,
    **guard_conf: Any,
) -> Celery:
    """A Celery app with the test tasks, routed to ``queue``; the guard installed if
    ``guarded`` (from ``guard``, else from the app's ``maintenance_guard_*`` config).
    ``celery_conf`` overrides Celery settings (e.g. the prefetch multiplier)."""
    app = Celery(f"mgtest-{queue}", set_as_current=False)
    app.conf.update(
        broker_url=broker,
        result_backend=redis_url,
        result_expires=600,
        # Results under the test's prefix and a remote-control exchange named after the
        # queue, so the test's cleanup deletes them too (and broadcasts stay in the test).
        result_backend_transport_options={"global_keyprefix": f"{{{prefix}}}:"},
        control_exchange=f"mgctl-{queue}",
        task_default_queue=queue,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=3,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        # AMQP publishes are asynchronous: without confirms a count read right after
        # delay() can miss a message the broker has not routed yet.
        broker_transport_options=(
            {"confirm_publish": True} if broker.startswith(("amqp", "pyamqp")) else {}
        ),
        maintenance_guard_redis_url=redis_url,
        maintenance_guard_key_prefix=prefix,
        maintenance_guard_task_operations=dict(TASK_PATTERNS),
        **{f"maintenance_guard_{k}": v for k, v in {"poll_interval": 0.2, **guard_conf}.items()},
    )
    app.conf.update(celery_conf or {})
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    def record(token: str) -> None:
        client.rpush(runs_key(prefix), token)

    @app.task(shared=False, name="mgtest.caption")
    def caption(token: str, duration: float = 0.0) -> str:
        record(token)
        time.sleep(duration)
        return token

    @app.task(
        shared=False,
        name="mgtest.guarded_caption",
        base=GuardedTask,
        operation="caption_generation",
    )
    def guarded_caption(token: str) -> str:
        record(token)
        return token

    @app.task(
        shared=False,
        name="mgtest.deferrable",
        base=GuardedTask,
        operation="image_processing",
        on_maintenance="defer",
    )
    def deferrable(token: str) -> str:
        record(token)
        return token

    @app.task(shared=False, name="mgtest.read")
    def read(token: str) -> str:
        record(token)
        return token

    @app.task(shared=False, name="mgtest.collect")
    def collect(results: list[str], token: str) -> str:
        record(token)
        return token

    @app.task(shared=False, name="mgtest.spin")
    def spin(token: str, duration: float) -> str:
        record(token)
        time.sleep(duration)
        return token

    @app.task(shared=False, name="mgtest.retrying", bind=True, max_retries=1)
    def retrying(self: Any, token: str) -> str:
        if self.request.retries:
            record(f"{token}:retry")
            return token
        record(token)
        # Wait (bounded) until the test has switched maintenance on and this pool process
        # has seen it, then retry: the retry is decided on the new state.
        inst = installation_of(self.app)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen = inst is None or inst.guard.current().is_active
            if seen and client.exists(flag_key(prefix, token)):
                break
            time.sleep(0.02)
        raise self.retry(countdown=0)

    if guarded:
        install(app, guard)
    return app


def uninstall(app: Celery) -> None:
    """Disconnect what `install` connected (tests make many apps in one process)."""
    inst = installation_of(app)
    if inst is None:
        return
    for sig, receiver in inst.receivers:
        sig.disconnect(receiver)
    inst.receivers = []


# ---------------------------------------------------------------------- brokers


@dataclass
class Broker:
    """A broker the tests publish to, and how to read a queue's length on it."""

    kind: str
    url: str
    redis_url: str
    queues: list[str] = field(default_factory=list)

    def queue_length(self, queue: str) -> int:
        """Messages waiting in ``queue``, read from the broker itself."""
        if self.kind == "redis":
            client = redis.Redis.from_url(self.url)
            try:
                total = int(client.llen(queue))
                for key in client.scan_iter(match=f"{queue}\x06\x16*"):
                    total += int(client.llen(key))
                return total
            finally:
                client.close()
        from kombu import Connection
        from kombu.exceptions import OperationalError

        with Connection(self.url) as conn:
            channel = conn.channel()
            try:
                return int(channel.queue_declare(queue=queue, passive=True).message_count)
            except conn.channel_errors + (OperationalError,):  # type: ignore[operator]
                return 0  # never declared: nothing was ever published to it
            finally:
                try:
                    channel.close()
                except Exception:
                    pass

    def queued_ids(self, queue: str) -> list[str]:
        """Task ids waiting in a Redis ``queue``, in delivery order (Redis broker only)."""
        assert self.kind == "redis"
        client = redis.Redis.from_url(self.url)
        try:
            raw = client.lrange(queue, 0, -1)
        finally:
            client.close()
        # kombu LPUSHes and BRPOPs: the tail is delivered first.
        return [json.loads(m)["headers"]["id"] for m in reversed(raw)]

    def cleanup(self) -> None:
        """Delete this broker's test queues and what the broker keeps for them."""
        if self.kind == "redis":
            delete_redis_queues(self.url, self.queues)
        else:
            delete_amqp_queues(self.queues, self.url)


def new_queue(broker: Broker) -> str:
    queue = f"mgq-{uuid.uuid4().hex[:10]}"
    broker.queues.append(queue)
    return queue


@pytest.fixture(params=["redis", "amqp"])
def broker(
    request: pytest.FixtureRequest,
    redis_url: str,
    cleanup_after_test: list[Callable[[], None]],
) -> Broker:
    """Each broker the tests run on: Redis always, RabbitMQ when port 5672 answers.

    Its test queues are deleted after the test, once its workers have stopped."""
    if request.param == "amqp":
        if not amqp_available():
            pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
        found = Broker("amqp", AMQP_URL, redis_url)
    else:
        found = Broker("redis", redis_url, redis_url)
    cleanup_after_test.append(found.cleanup)
    return found


@pytest.fixture
def redis_broker(redis_url: str, cleanup_after_test: list[Callable[[], None]]) -> Broker:
    """The Redis broker only (test queues deleted after the test)."""
    found = Broker("redis", redis_url, redis_url)
    cleanup_after_test.append(found.cleanup)
    return found


# ---------------------------------------------------------------------- worker processes


@dataclass
class WorkerProcess:
    """A real ``celery worker`` subprocess (prefork) on one queue."""

    process: subprocess.Popen[bytes]
    hostname: str
    queue: str
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children): a power loss."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM); SIGKILL whatever is left after 20 s."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.process.poll() is None:
            self.process.wait(10)


StartWorker = Callable[..., WorkerProcess]


def worker_env(
    broker: Broker, redis_url: str, key_prefix: str, queue: str, guard_conf: dict[str, Any]
) -> dict[str, str]:
    """The environment from which this module's test app (``make_app``) is built in a worker."""
    env = dict(os.environ)
    env.update(
        MG_WORKER_BROKER=broker.url,
        MG_WORKER_REDIS_URL=redis_url,
        MG_WORKER_PREFIX=key_prefix,
        MG_WORKER_QUEUE=queue,
        MG_WORKER_GUARD_CONF=json.dumps(guard_conf),
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def spawn_worker(
    app_module: str,
    queue: str,
    hostname: str,
    *,
    concurrency: int,
    env: dict[str, str],
    log_path: Path,
    redis_url: str,
    key_prefix: str,
    also_consume: tuple[str, ...] = (),
) -> WorkerProcess:
    """Start ``celery -A app_module worker`` (prefork, its own process group) on ``queue``
    (and ``also_consume``) and wait until its ``worker_ready`` hook registered this very
    process."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", app_module, "worker",
                "-P", "prefork", "-c", str(concurrency), "-Q", ",".join((queue, *also_consume)),
                "-n", hostname,
                "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    worker = WorkerProcess(process, hostname, queue, log_path)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{worker.log()[-3000:]}")
            info = client.hget(f"{{{key_prefix}}}:workers", hostname)
            return bool(info) and json.loads(info).get("pid") == process.pid

        wait_for(ready, timeout=60, interval=0.05)
    except BaseException:
        worker.stop()
        raise
    finally:
        client.close()
    return worker


@pytest.fixture
def start_worker(tmp_path: Path, key_prefix: str, redis_url: str) -> Iterator[StartWorker]:
    """Factory: start a prefork worker (concurrency 2) on ``queue``; all stopped afterwards.

    ``app_module`` is the ``celery -A`` argument (default: this module's test app, built
    from the ``MG_WORKER_*`` environment); ``extra_env`` adds environment variables,
    ``also_consume`` more queues, ``celery_conf`` Celery settings.

    Waits until the worker has registered itself (its ``worker_ready`` hook ran).
    """
    started: list[WorkerProcess] = []

    def start(
        broker: Broker,
        queue: str,
        *,
        name: str | None = None,
        concurrency: int = 2,
        app_module: str = "tests.integration.celery_support",
        extra_env: dict[str, str] | None = None,
        also_consume: tuple[str, ...] = (),
        celery_conf: dict[str, Any] | None = None,
        **guard_conf: Any,
    ) -> WorkerProcess:
        hostname = f"{name or queue}@{socket.gethostname()}"
        env = worker_env(broker, redis_url, key_prefix, queue, guard_conf)
        env.update(extra_env or {})
        if celery_conf:
            env["MG_WORKER_CELERY_CONF"] = json.dumps(celery_conf)
        worker = spawn_worker(
            app_module,
            queue,
            hostname,
            concurrency=concurrency,
            env=env,
            log_path=tmp_path / f"worker-{len(started)}.log",
            redis_url=redis_url,
            key_prefix=key_prefix,
            also_consume=also_consume,
        )
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


def wait_until_seen(guard: MaintenanceGuard, worker: WorkerProcess, timeout: float = 30) -> None:
    """Wait until the worker's main process has seen the guard's current state version
    (its presence record, written on each poll). A message a producer without the guard
    publishes before that could legitimately run: the worker did not know yet."""
    version = guard.current().version

    def seen() -> bool:
        for record in guard.store.read_presence().values():
            if record.get("pid") == worker.process.pid and (record.get("version") or 0) >= version:
                return True
        return False

    wait_for(seen, timeout=timeout)


def runs(redis_client: redis.Redis, prefix: str) -> list[str]:
    """Every recorded run so far, in order."""
    return list(redis_client.lrange(runs_key(prefix), 0, -1))


def wait_runs(
    redis_client: redis.Redis, prefix: str, expected: list[str], timeout: float = 30
) -> None:
    """Wait until every token of ``expected`` has run at least once."""
    wait_for(lambda: set(expected) <= set(runs(redis_client, prefix)), timeout=timeout)


# ---------------------------------------------------------------------- worker entry point

if os.environ.get("MG_WORKER_PREFIX"):
    app = make_app(
        broker=os.environ["MG_WORKER_BROKER"],
        redis_url=os.environ["MG_WORKER_REDIS_URL"],
        prefix=os.environ["MG_WORKER_PREFIX"],
        queue=os.environ["MG_WORKER_QUEUE"],
        celery_conf=json.loads(os.environ.get("MG_WORKER_CELERY_CONF") or "{}"),
        **json.loads(os.environ.get("MG_WORKER_GUARD_CONF") or "{}"),
    )
