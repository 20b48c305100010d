"""The process of the publish benchmark: a bare Celery app and the guarded app of
`bench.celery_app` side by side, publishing to the same Redis broker.

Usage: ``MGBENCH_GUARDED=1 python -m bench.publish_child QUEUE``, then lines on stdin:
``sync V`` waits until the guard has seen state version V; ``bare N``, ``guarded N`` or
``refuse N`` prints the wall and CPU seconds (this thread's) that N ``apply_async`` calls
took; ``refuse`` expects maintenance to be on and fails unless every call raised
`MaintenanceActive`; ``pairs N`` publishes N times on each side, alternating call by
call (the order swapped every pair), and prints the bare side's wall and CPU seconds,
then the guarded side's; ``background`` prints the CPU seconds the process has spent so far
outside this thread (the guard's watcher). ``MGBENCH_CONTROL=1`` makes the "guarded" side a
second bare app (the benchmark's own resolution).

Both sides share the process: a process's own speed (memory layout, hash seed) differs
from another's by several percent, more than the 1% the benchmark has to resolve.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from celery import Celery

from .celery_app import GUARDED, app, noop
from .common import redis_url


def bare_twin(name: str) -> tuple[Celery, Any]:
    """A plain Celery app with `bench.celery_app`'s settings and a plain ``bench.noop``."""
    twin = Celery(name, broker=redis_url())
    twin.conf.update(
        {key: app.conf[key] for key in ("task_ignore_result", "task_default_queue")},
        broker_connection_retry_on_startup=True,
    )

    @twin.task(name="bench.noop")  # type: ignore[untyped-decorator]
    def bare_noop() -> None:
        """Does nothing."""

    return twin, bare_noop


def publish(task: Any, queue: str, count: int) -> None:
    for _ in range(count):
        task.apply_async(queue=queue)


def pairs(bare: Any, guarded: Any, queue: str, count: int) -> list[float]:
    """Wall and CPU seconds of the bare side's calls, then of the guarded side's."""
    clock, cpu_clock = time.perf_counter, time.thread_time
    wall = [0.0, 0.0]
    cpu = [0.0, 0.0]
    tasks = (bare, guarded)
    for i in range(count):
        for side in (0, 1) if i % 2 == 0 else (1, 0):
            cpu_started = cpu_clock()
            started = clock()
            tasks[side].apply_async(queue=queue)
            wall[side] += clock() - started
            cpu[side] += cpu_clock() - cpu_started
    return [wall[0], cpu[0], wall[1], cpu[1]]


def refuse(task: Any, queue: str, count: int) -> None:
    from maintenance_guard import MaintenanceActive

    if not GUARDED:
        raise SystemExit("refusal needs the guarded app")
    refused = 0
    for _ in range(count):
        try:
            task.apply_async(queue=queue)
        except MaintenanceActive:
            refused += 1
    if refused != count:
        raise SystemExit(f"only {refused}/{count} publishes were refused")


def sync(version: int) -> str:
    """Wait (bounded) until this process's guard has seen state ``version``."""
    if not GUARDED:
        return "ok"
    from .celery_app import guard

    deadline = time.monotonic() + 10
    while guard.current().version < version:
        if time.monotonic() > deadline:
            raise SystemExit(f"state version {version} not seen within 10 s")
        time.sleep(0.001)
    return "ok"


def main() -> None:
    queue = sys.argv[1]
    bare_app, bare_noop = bare_twin("mgbench-bare")
    sides: dict[str, Any] = {"bare": bare_noop, "guarded": noop, "refuse": noop}
    if os.environ.get("MGBENCH_CONTROL") == "1":
        sides["guarded"] = bare_twin("mgbench-control")[1]
    for side in (bare_app, app):
        with side.producer_or_acquire():
            pass
    print("ready", flush=True)
    for line in sys.stdin:
        what, count = line.split()
        if what == "sync":
            print(sync(int(count)), flush=True)
            continue
        if what == "background":
            print(f"{time.process_time() - time.thread_time():.9f}", flush=True)
            continue
        if what == "pairs":
            spent = pairs(sides["bare"], sides["guarded"], queue, int(count))
            print(" ".join(f"{x:.9f}" for x in spent), flush=True)
            continue
        task = sides[what]
        action = refuse if what == "refuse" else publish
        cpu = time.thread_time()
        started = time.perf_counter()
        action(task, queue, int(count))
        took = time.perf_counter() - started
        print(f"{took:.9f} {time.thread_time() - cpu:.9f}", flush=True)


if __name__ == "__main__":
    main()
