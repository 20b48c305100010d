"""Many instances: 4 web processes (gunicorn, each its own port) and 2 prefork workers.

One switch reaches every instance: each web process's status endpoint shows the same
state and refuses blocked requests, and each worker defers a blocked message from a
producer without the guard. The time each instance took to agree is measured (from
``enable`` returning to the first answer showing the change) and recorded as a junit
property; nothing is asserted about speed beyond the bounded waits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from maintenance_guard import MaintenanceGuard
from maintenance_guard.deferred import DeferredQueue
from tests.conftest import ROOT
from tests.e2e.flask_support import http
from tests.helpers import free_port, wait_for
from tests.integration.celery_support import Broker, new_queue, runs
from tests.reliability.workers import StartRelWorker, amqp_broker, producers, rel_worker

__all__ = ["amqp_broker", "producers", "rel_worker"]

WEB_INSTANCES = 4


def start_web(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--worker-class",
            "gthread",
            "--workers",
            "1",
            "--threads",
            "8",
            "--bind",
            f"127.0.0.1:{port}",
            "tests.e2e.flask_support:gunicorn_app()",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture
def web_instances(cli_env: dict[str, str]) -> Iterator[list[str]]:
    """Four gunicorn processes serving the test app, each on its own port."""
    started = [start_web(cli_env) for _ in range(WEB_INSTANCES)]
    try:
        for proc, url in started:

            def up(proc: subprocess.Popen[bytes] = proc, url: str = url) -> bool:
                assert proc.poll() is None, "gunicorn exited"
                try:
                    return http("GET", url + "/api/maintenance/status", timeout=2)[0] == 200
                except OSError:
                    return False

            wait_for(up, timeout=60, interval=0.1)
            # Ordinary traffic first: a process that has only served the (exempt) status API
            # does not follow changes yet; the test below pins that bug down on its own.
            assert http("GET", url + "/")[0] == 200
        yield [url for _, url in started]
    finally:
        for proc, _ in started:
            proc.terminate()
        for proc, _ in started:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def status_of(url: str) -> dict[str, Any]:
    code, _, body = http("GET", url + "/api/maintenance/status")
    assert code == 200, (code, body)
    return json.loads(body)  # type: ignore[no-any-return]


def agreement_times(urls: list[str], expect_active: bool, since: float) -> dict[str, float]:
    """Poll every instance until it shows the expected state; seconds each one took."""
    seen: dict[str, float] = {}

    def all_agree() -> bool:
        for url in urls:
            if url not in seen and status_of(url)["is_active"] is expect_active:
                seen[url] = time.monotonic() - since
        return len(seen) == len(urls)

    wait_for(all_agree, timeout=15, interval=0.005)
    return seen


def worker_versions(guard: MaintenanceGuard, hostnames: list[str]) -> dict[str, int | None]:
    """The state version each worker's main process last reported (presence records)."""
    store: Any = guard.store
    client: redis.Redis = store.redis
    pids = {}
    for name in hostnames:
        raw = client.hget(store.key("workers"), name)
        pids[name] = json.loads(raw)["pid"] if raw else None
    presence = store.read_presence()
    out: dict[str, int | None] = {}
    for name, pid in pids.items():
        versions = [rec.get("version") for rec in presence.values() if rec.get("pid") == pid]
        out[name] = versions[0] if versions else None
    return out


def test_status_endpoint_of_a_web_process_that_served_only_status_requests_follows_changes(
    cli_env: dict[str, str], guard: MaintenanceGuard
) -> None:
    """A load balancer's health checks or a status page may be all a process has served."""
    proc, url = start_web(cli_env)
    try:
        wait_for(lambda: _answers(proc, url), timeout=60, interval=0.1)
        assert status_of(url)["is_active"] is False
        guard.enable("normal", reason="seen by status-only traffic", by="ops")
        wait_for(lambda: status_of(url)["is_active"] is True, timeout=10)
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(proc: subprocess.Popen[bytes], url: str) -> bool:
    assert proc.poll() is None, "gunicorn exited"
    try:
        return http("GET", url + "/api/maintenance/status", timeout=2)[0] == 200
    except OSError:
        return False


@pytest.mark.slow
def test_one_switch_reaches_four_web_processes_and_two_workers(
    web_instances: list[str],
    amqp_broker: Broker,
    rel_worker: StartRelWorker,
    producers: Callable[..., Celery],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    key_prefix: str,
    record_property: Callable[[str, object], None],
) -> None:
    queues = [new_queue(amqp_broker), new_queue(amqp_broker)]
    workers = [
        rel_worker(amqp_broker, queue, name=f"fleet{i}", concurrency=1)
        for i, queue in enumerate(queues)
    ]
    plain = producers(amqp_broker, queues[0], guarded=False)
    for url in web_instances:
        assert status_of(url)["is_active"] is False

    enabled = guard.enable("normal", reason="fleet switch", duration=600, by="ops")
    lags = agreement_times(web_instances, True, time.monotonic())
    record_property("web_agreement_seconds_max", round(max(lags.values()), 4))
    views = [status_of(url) for url in web_instances]
    for view in views:  # every instance tells users the same thing
        assert (view["mode"], view["reason"], view["started_at"]) == (
            "normal",
            "fleet switch",
            views[0]["started_at"],
        )
        assert view["blocked_operations"] == views[0]["blocked_operations"]
    for url in web_instances:
        code, headers, _ = http("POST", url + "/api/jobs", {"name": "x"})
        assert code == 503 and "Retry-After" in headers

    hostnames = [w.hostname for w in workers]
    wait_for(
        lambda: all(v == enabled.version for v in worker_versions(guard, hostnames).values()),
        timeout=15,
    )
    for i, queue in enumerate(queues):  # a blocked message straight to each worker's queue
        plain.send_task("mgtest.caption", args=[f"blocked-{i}"], queue=queue)
        plain.send_task("mgtest.read", args=[f"read-{i}"], queue=queue)
    wait_for(lambda: {"read-0", "read-1"} <= set(runs(redis_client, key_prefix)), timeout=30)
    deferred = DeferredQueue(guard.store)
    wait_for(lambda: len(deferred) == 2, timeout=30)
    assert not any(r.startswith("blocked-") for r in runs(redis_client, key_prefix))

    guard.disable(by="ops")
    lags_off = agreement_times(web_instances, False, time.monotonic())
    record_property("web_agreement_off_seconds_max", round(max(lags_off.values()), 4))
    for url in web_instances:
        assert http("POST", url + "/api/jobs", {"name": "x"})[0] == 201
    wait_for(lambda: {"blocked-0", "blocked-1"} <= set(runs(redis_client, key_prefix)), timeout=30)
    assert sorted(r for r in runs(redis_client, key_prefix) if r.startswith("blocked-")) == [
        "blocked-0",
        "blocked-1",
    ]
