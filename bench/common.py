"""Shared pieces of the benchmarks: the Redis to use, unique prefixes, statistics, output.

Every benchmark module runs as ``python -m bench.<name> [--rounds N]`` and prints, as its
last line of stdout, one JSON object (a "row") that ``bench/run`` turns into the table:
``{"row": true, "benchmark", "against", "result", "target", "met", "data"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_url() -> str:
    """The Redis the benchmarks run on: ``$REDIS_URL``, else 127.0.0.1:6379."""
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def unique_prefix(name: str) -> str:
    """A key prefix (and queue-name stem) no other run or test uses."""
    return f"mgbench-{name}-{uuid.uuid4().hex[:10]}"


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete every key of a guard prefix (``{prefix}:*``) and plain ``prefix*`` keys."""
    for pattern in (f"{{{prefix}}}:*", f"{prefix}*", f"*{prefix}*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])


@contextmanager
def cleaned(prefix: str) -> Iterator[redis.Redis]:
    """A Redis client; the prefix's keys are deleted on exit, whatever happens."""
    client = redis.Redis.from_url(redis_url(), decode_responses=True)
    try:
        yield client
    finally:
        delete_prefix(client, prefix)
        client.close()


def start_bench_worker(
    queue: str, hostname: str, concurrency: int, env: dict[str, str]
) -> subprocess.Popen[str]:
    """A prefork ``celery worker`` of ``bench.celery_app`` (stderr piped for diagnostics)."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker",
            "-P", "prefork", "-c", str(concurrency), "-Q", queue, "-l", "warning",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", hostname,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return float(ordered[rank - 1])


def parse_args(description: str, default_rounds: int = 5) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=default_rounds)
    parser.add_argument("--quick", action="store_true", help="smaller workloads")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def emit(
    benchmark: str,
    against: str,
    result: str,
    target: str,
    met: bool | None,
    **data: Any,
) -> None:
    """Print the benchmark's row as the last line of stdout (``met`` None: no target)."""
    row = {
        "row": True,
        "benchmark": benchmark,
        "against": against,
        "result": result,
        "target": target,
        "met": met,
        "data": data,
    }
    sys.stdout.flush()
    print(json.dumps(row), flush=True)


def note(message: str) -> None:
    """Progress for a human, on stderr (stdout is for the row)."""
    print(message, file=sys.stderr, flush=True)
