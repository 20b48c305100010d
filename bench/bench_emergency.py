"""Benchmark: time from the end of the grace period until the last terminated job is gone.

Starts a real prefork worker (concurrency 4) of the emergency test app on a Redis broker,
fills it with long jobs, runs `guard.emergency(grace_period=1)` and reads the report's
``seconds_to_gone`` (grace end -> every job's pool process finished, observed through the
worker's own pool). Runs the SIGTERM path and the SIGKILL path (jobs ignoring SIGTERM,
``kill_after=1``: there the time includes the 1 s wait). Target (SIGTERM path): <= 1 s.

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

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from maintenance_guard import MaintenanceGuard  # noqa: E402
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


def one_run(redis_url: str, task: str, kill_after: int, jobs: int) -> float:
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
    try:
        wait(lambda: client.hexists(f"{{{prefix}}}:workers", hostname))
        for i in range(jobs):
            app.send_task(task, args=[f"job{i}"], kwargs={"seconds": 300})
        wait(lambda: client.llen(started_key(prefix)) >= jobs)
        report = guard.emergency(
            "bench", grace_period=1, kill_after=kill_after, celery_app=app, sessions=False
        )
        assert len(report.terminated) == jobs and not report.not_stopped, report.to_dict()
        assert report.seconds_to_gone is not None
        guard.disable()
        return report.seconds_to_gone
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
    for label, task, kill_after in (
        ("SIGTERM (grace end -> last job gone)", SLEEPY, 5),
        ("SIGKILL after kill_after=1s (includes the 1 s wait)", STUBBORN, 1),
    ):
        times = [one_run(args.redis_url, task, kill_after, args.jobs) for _ in range(args.runs)]
        print(
            f"{label}: {args.jobs} jobs, runs={args.runs}: "
            f"median {statistics.median(times):.3f}s, max {max(times):.3f}s "
            f"({', '.join(f'{t:.3f}' for t in times)})"
        )
    print("target: SIGTERM path <= 1.0 s")


if __name__ == "__main__":
    main()
