"""Benchmark: time from the end of the grace period until the last terminated job is gone.

Starts a real prefork worker (concurrency 4) of the emergency test app on a Redis broker,
fills it with long jobs, runs `guard.emergency(grace_period=1)` and reads the report's
``seconds_to_gone`` (grace end -> every job's pool process finished, observed through the
worker's own pool). Runs the SIGTERM path and the SIGKILL path (jobs ignoring SIGTERM,
``kill_after=1``: there the time includes the 1 s wait). The runner checks for the jobs
every ``POLL_INTERVAL`` (0.05 s), but what bounds the time is the worker: once its pool
processes die it replaces them, and answers no remote control meanwhile (about 0.3 s on
2 cores). So each SIGTERM run also times Celery's own way on the same worker and as many
jobs (``control.revoke(terminate=True)``, then ``inspect().stats()`` every 0.05 s until
their processes have left the pool), before or after the emergency, alternately.

Usage: python bench/bench_emergency.py [--runs 3] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from maintenance_guard import MaintenanceGuard  # noqa: E402
from maintenance_guard.emergency.fleet import POLL_INTERVAL  # noqa: E402
from tests.integration.emergency_support import (  # noqa: E402
    SLEEPY,
    STUBBORN,
    make_emergency_app,
    started_key,
)


def wait(condition: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the worker")
        time.sleep(0.05)


def celery_revoke(app: Any, client: Any, prefix: str, hostname: str, task: str, jobs: int) -> float:
    """The baseline, Celery's own way on the same worker: start ``jobs`` more jobs, then
    ``control.revoke(terminate=True)`` and ``inspect().stats()`` every POLL_INTERVAL until
    none of their processes is in the pool any more; seconds from the revoke to that
    answer. (``inspect().active()`` is no measure: it drops a job when the revoke is
    handled, before its process has exited.)"""
    already = client.llen(started_key(prefix))
    for i in range(jobs):
        app.send_task(task, args=[f"celery{i}"], kwargs={"seconds": 300})
    wait(lambda: client.llen(started_key(prefix)) >= already + jobs)
    inspector = app.control.inspect(destination=[hostname], timeout=1)
    running = (inspector.active() or {}).get(hostname) or []
    ids = sorted(j["id"] for j in running)
    pids = {j["worker_pid"] for j in running}
    assert len(ids) == jobs and len(pids) == jobs, running
    started = time.time()
    app.control.revoke(ids, terminate=True, signal="SIGTERM", destination=[hostname])
    while True:
        stats = (inspector.stats() or {}).get(hostname)
        if stats is not None and not pids & set(stats["pool"]["processes"]):
            return time.time() - started
        if time.time() - started > 30:
            raise SystemExit("Celery's revoke left the jobs running for 30 s")
        time.sleep(POLL_INTERVAL)


def one_run(
    redis_url: str, task: str, kill_after: int, jobs: int, baseline: str
) -> tuple[float, float | None]:
    """Seconds from the grace period's end to the last job gone; and, with ``baseline``
    ``"before"`` or ``"after"`` (the guard's emergency), Celery's own revoke's on the
    same worker (`celery_revoke`)."""
    prefix = f"bench-em-{uuid.uuid4().hex[:8]}"
    queue = f"bench-emq-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    env = dict(os.environ)
    env.update(
        MG_EM_BROKER=redis_url,
        MG_EM_REDIS_URL=redis_url,
        MG_EM_PREFIX=prefix,
        MG_EM_QUEUE=queue,
        PYTHONPATH=str(ROOT),
    )
    hostname = f"bench-{queue}@{socket.gethostname()}"
    log = tempfile.NamedTemporaryFile(prefix="bench-em-", suffix=".log", delete=False)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.integration.emergency_support",
            "worker",
            "-P",
            "prefork",
            "-c",
            str(jobs),
            "-Q",
            queue,
            "-n",
            hostname,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    app = make_emergency_app(broker=redis_url, redis_url=redis_url, prefix=prefix, queue=queue)
    guard = MaintenanceGuard.from_url(redis_url, key_prefix=prefix)
    celery_s = None
    try:
        wait(lambda: client.hexists(f"{{{prefix}}}:workers", hostname))
        if baseline == "before":
            celery_s = celery_revoke(app, client, prefix, hostname, task, jobs)
        already = client.llen(started_key(prefix))
        for i in range(jobs):
            app.send_task(task, args=[f"job{i}"], kwargs={"seconds": 300})
        wait(lambda: client.llen(started_key(prefix)) >= already + jobs)
        report = guard.emergency(
            "bench", grace_period=1, kill_after=kill_after, celery_app=app, sessions=False
        )
        assert len(report.terminated) == jobs and not report.not_stopped, report.to_dict()
        assert report.seconds_to_gone is not None
        guard.disable()
        if baseline == "after":
            celery_s = celery_revoke(app, client, prefix, hostname, task, jobs)
        return report.seconds_to_gone, celery_s
    finally:
        guard.stop()
        os.killpg(worker.pid, 9)
        worker.wait(10)
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*")) + [queue]
        client.delete(*keys)
        client.close()
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    for label, task, kill_after, baseline in (
        ("SIGTERM (grace end -> last job gone)", SLEEPY, 5, True),
        ("SIGKILL after kill_after=1s (includes the 1 s wait)", STUBBORN, 1, False),
    ):
        runs = [
            one_run(
                args.redis_url,
                task,
                kill_after,
                args.jobs,
                ("before" if i % 2 else "after") if baseline else "",
            )
            for i in range(args.runs)
        ]
        times = [t for t, _c in runs]
        print(
            f"{label}: {args.jobs} jobs, runs={args.runs}: "
            f"median {statistics.median(times):.3f}s, max {max(times):.3f}s "
            f"({', '.join(f'{t:.3f}' for t in times)})"
        )
        if baseline:
            celery = [c for _t, c in runs if c is not None]
            ratios = [t / c for t, c in runs if c]
            print(
                f"celery revoke(terminate=True), inspect().stats() every "
                f"{POLL_INTERVAL:.3f}s: median {statistics.median(celery):.3f}s, "
                f"max {max(celery):.3f}s; ratio median {statistics.median(ratios):.2f}"
            )
    print(f"poll interval: {POLL_INTERVAL:.3f}s")


if __name__ == "__main__":
    main()
