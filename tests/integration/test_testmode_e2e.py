"""Test mode on the whole stack: a real prefork Celery worker, a real Flask app over HTTP.

Nothing is refused; the validation report and the metrics count exactly the attempts
made, per operation and surface; every procedure check passes.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from typing import Any

import redis

from maintenance_guard import MaintenanceGuard
from maintenance_guard.metrics import mount_metrics
from maintenance_guard.validation import PASS, build_test_report
from tests.e2e.flask_support import ENDPOINT_OPERATIONS, build_app, http, live_server
from tests.helpers import wait_for
from tests.integration import celery_support
from tests.integration.celery_support import (
    TASK_PATTERNS,
    Broker,
    StartWorker,
    make_app,
    new_queue,
    uninstall,
    wait_runs,
)
from tests.integration.test_metrics import sample

redis_broker = celery_support.redis_broker
start_worker = celery_support.start_worker

N_GUARDED, N_UNGUARDED, N_READ = 4, 3, 2
N_JOBS_HTTP, N_ITEMS_HTTP, N_NOTES_HTTP = 3, 5, 2


def per_surface(report: Any) -> dict[str, dict[str, int]]:
    return {
        op: {s: c["attempts"] for s, c in t.by_surface.items()}
        for op, t in report.operations.items()
    }


def test_test_mode_window_on_worker_and_http_refuses_nothing_and_report_matches(
    make_guard: Callable[..., MaintenanceGuard],
    redis_broker: Broker,
    start_worker: StartWorker,
    redis_client: redis.Redis,
    redis_url: str,
    key_prefix: str,
) -> None:
    guard = make_guard(task_operations=TASK_PATTERNS, endpoint_operations=ENDPOINT_OPERATIONS)
    queue = new_queue(redis_broker)
    start_worker(redis_broker, queue)
    producer = make_app(
        broker=redis_broker.url, redis_url=redis_url, prefix=key_prefix, queue=queue, guard=guard
    )
    web = build_app(guard, EXEMPT_ENDPOINTS=["static", "login", "maintenance_guard_metrics.*"])
    mount_metrics(web, guard)
    try:
        with live_server(web) as server:
            guard.enable("test", reason="rehearsal on the stack", by="alice")
            wait_for(lambda: worker_sees_test(redis_client, key_prefix, guard), timeout=15)

            tokens: list[str] = []
            for _ in range(N_GUARDED):
                tokens.append(uuid.uuid4().hex)
                producer.tasks["mgtest.caption"].delay(tokens[-1])
            for _ in range(N_READ):
                tokens.append(uuid.uuid4().hex)
                producer.tasks["mgtest.read"].delay(tokens[-1])
            # A producer process without the guard: its messages are seen at the worker.
            bare = [uuid.uuid4().hex for _ in range(N_UNGUARDED)]
            publish_without_guard(redis_broker.url, queue, "mgtest.caption", bare)
            tokens += bare
            codes = [http("POST", server.url + "/api/jobs", {})[0] for _ in range(N_JOBS_HTTP)]
            codes += [http("GET", server.url + "/api/items")[0] for _ in range(N_ITEMS_HTTP)]
            codes += [http("POST", server.url + "/notes", {})[0] for _ in range(N_NOTES_HTTP)]

            assert codes == [201] * N_JOBS_HTTP + [200] * (N_ITEMS_HTTP + N_NOTES_HTTP)
            wait_runs(redis_client, key_prefix, tokens)  # every task ran: none refused
            guard.flush()

            expected = {
                "caption_generation": {"publish": N_GUARDED, "worker": N_UNGUARDED},
                "read": {"publish": N_READ, "http": N_ITEMS_HTTP},
                "job_creation": {"http": N_JOBS_HTTP},
                "-": {"http": N_NOTES_HTTP},
            }
            status_url = server.url + "/api/maintenance/status"

            def matching_report() -> Any:
                report = build_test_report(guard, grace=30, status_url=status_url, latency_calls=0)
                seen.append(per_surface(report))
                return report if seen[-1] == expected else None

            seen: list[dict[str, dict[str, int]]] = []
            try:
                report = wait_for(matching_report, timeout=15)  # the worker flushes each poll
            except AssertionError:
                raise AssertionError(f"report counts {seen[-1:]} != {expected}") from None
            ops = report.operations  # type: ignore[attr-defined]
            assert ops["caption_generation"].would_block_normal == N_GUARDED + N_UNGUARDED
            assert ops["read"].would_block_normal == 0
            assert ops["read"].would_block_emergency == N_READ + N_ITEMS_HTTP
            assert ops["-"].would_block_normal == 0 and ops["-"].would_block_emergency == 2
            assert ops["caption_generation"].targets == {"mgtest.caption": 7}
            verdicts = {v.name: v for v in report.verdicts}  # type: ignore[attr-defined]
            for name in ("state_propagated", "workers_registered", "status_api_answered"):
                assert verdicts[name].result == PASS, verdicts[name]
            assert guard.attempt_counts().get("blocked") is None  # nothing refused

            _status, _headers, body = http("GET", server.url + "/metrics")
            text = body.decode()
            would = "maintenance_guard_test_would_block_total"
            assert (
                sample(text, would, operation="caption_generation", surface="worker", mode="normal")
                == N_UNGUARDED
            )
            assert (
                sample(text, would, operation="job_creation", surface="http", mode="normal")
                == N_JOBS_HTTP
            )
    finally:
        uninstall(producer)


def publish_without_guard(broker_url: str, queue: str, task: str, tokens: list[str]) -> None:
    """Publish from a separate process that has no maintenance guard installed."""
    script = textwrap.dedent(
        f"""
        from celery import Celery
        app = Celery("bare", broker={broker_url!r}, set_as_current=False)
        for token in {tokens!r}:
            app.send_task({task!r}, args=[token], queue={queue!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def worker_sees_test(client: redis.Redis, prefix: str, guard: MaintenanceGuard) -> bool:
    """The worker's guard reported (presence) the version that switched test mode on."""
    import json

    version = guard.current().version
    records = [json.loads(v) for v in client.hvals(f"{{{prefix}}}:processes")]
    return any(
        r.get("version") == version and r.get("role") in ("celery", "worker") for r in records
    )
