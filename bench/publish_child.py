"""One side of the publish benchmark, in its own long-lived process (bare or guarded app).

Usage: python -m bench.publish_child QUEUE, then lines on stdin:
``sync V`` waits until the guard has seen state version V; ``publish N`` or
``refuse N`` prints the wall and CPU seconds the N ``apply_async`` calls took;
``refuse`` expects maintenance to be on and fails unless every call raised
`MaintenanceActive`. The parent alternates batches between a bare and a guarded child.
"""

from __future__ import annotations

import sys
import time

from .celery_app import GUARDED, app, noop


def publish(queue: str, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        noop.apply_async(queue=queue)
    return time.perf_counter() - started


def refuse(queue: str, count: int) -> float:
    from maintenance_guard import MaintenanceActive

    if not GUARDED:
        raise SystemExit("refusal needs the guarded app")
    refused = 0
    started = time.perf_counter()
    for _ in range(count):
        try:
            noop.apply_async(queue=queue)
        except MaintenanceActive:
            refused += 1
    took = time.perf_counter() - started
    if refused != count:
        raise SystemExit(f"only {refused}/{count} publishes were refused")
    return took


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
    with app.producer_or_acquire():
        pass
    print("ready", flush=True)
    for line in sys.stdin:
        what, count = line.split()
        if what == "sync":
            print(sync(int(count)), flush=True)
            continue
        cpu = time.process_time()
        took = (publish if what == "publish" else refuse)(queue, int(count))
        print(f"{took:.9f} {time.process_time() - cpu:.9f}", flush=True)


if __name__ == "__main__":
    main()
