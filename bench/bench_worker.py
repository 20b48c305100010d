"""Worker throughput of no-op tasks with in-flight tracking against a bare worker.

Two long-lived prefork workers (2 processes each): one of the bare app, one of the
guarded app (in-flight registry, heartbeats, worker re-check). Batches alternate between
them: a start marker, N no-op tasks and an end marker are staged in a spare list, then
renamed onto the worker's queue at once. Throughput is N over the time between the two
markers, as the worker stamped them; a round's ratio is the median of its pairs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

from .common import ROOT, cleaned, emit, median, note, parse_args, start_bench_worker, unique_prefix


class Worker:
    """A prefork worker (2 processes) of the bare or guarded app on its own queue."""

    def __init__(self, guarded: bool, prefix: str, client: Any) -> None:
        self.side = "guarded" if guarded else "bare"
        self.queue = f"{prefix}-{self.side}"
        self.prefix = prefix
        self.client = client
        env = dict(os.environ)
        env["MGBENCH_GUARDED"] = "1" if guarded else "0"
        env["MGBENCH_PREFIX"] = prefix
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = start_bench_worker(self.queue, f"{prefix}-{self.side}@%h", 2, env)

    def batch(self, n: int, staging: str) -> float:
        """Tasks per second over one batch of ``n`` no-op tasks (0: just wait until up)."""
        from .celery_app import mark, noop

        start_key = f"{self.prefix}:{self.side}:start"
        end_key = f"{self.prefix}:{self.side}:end"
        self.client.delete(staging, start_key, end_key)
        # Stage the whole batch first, then hand it over at once: the worker never waits
        # on the publisher, and its start-up or idle polling is outside the marked span.
        mark.apply_async((start_key,), queue=staging)
        for _ in range(n):
            noop.apply_async(queue=staging)
        mark.apply_async((end_key,), queue=staging)
        self.client.rename(staging, self.queue)
        deadline = time.monotonic() + 180
        # Both stamps: with two pool processes the markers of a short batch run side by side.
        while self.client.exists(start_key, end_key) < 2:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.side} worker exited: {self.proc.stderr.read()[-500:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.side} worker did not finish {n} tasks within 180 s")
            time.sleep(0.02)
        started = float(self.client.get(start_key))
        ended = float(self.client.get(end_key))
        left = int(self.client.llen(self.queue))
        if left:
            raise SystemExit(f"{left} messages still queued after the end marker ran")
        return n / (ended - started) if n else 0.0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.client.delete(self.queue)


def main() -> None:
    args = parse_args(__doc__ or "")
    n, pairs = (500, 1) if args.quick else (600, 5)
    prefix = unique_prefix("wrk")
    ratios: list[float] = []
    bare_rate: list[float] = []
    guarded_rate: list[float] = []
    os.environ["MGBENCH_PREFIX"] = prefix
    os.environ["MGBENCH_GUARDED"] = "0"  # this process publishes with the bare app
    staging = f"{prefix}-staging"
    with cleaned(prefix) as client:
        workers = [Worker(False, prefix, client), Worker(True, prefix, client)]
        try:
            for w in workers:
                w.batch(0, staging)  # up and consuming
                w.batch(n // 4, staging)  # warm
            for r in range(args.rounds):
                time_per = {"bare": 0.0, "guarded": 0.0}
                pair_ratios: list[float] = []
                for i in range(pairs):
                    order = workers if (r + i) % 2 == 0 else workers[::-1]
                    one = {w.side: n / w.batch(n, staging) for w in order}
                    for side, took in one.items():
                        time_per[side] += took
                    pair_ratios.append(one["bare"] / one["guarded"])
                bare_rate.append(pairs * n / time_per["bare"])
                guarded_rate.append(pairs * n / time_per["guarded"])
                # The median pair, so a burst of load from elsewhere does not decide it.
                ratios.append(median(pair_ratios))
                note(
                    f"worker round {r + 1}: bare {bare_rate[-1]:.0f}/s, guarded "
                    f"{guarded_rate[-1]:.0f}/s, ratio {ratios[-1]:.3f}"
                )
        finally:
            for w in workers:
                w.stop()
            client.delete(staging)
    ratio = median(ratios)
    emit(
        "worker throughput of no-op tasks with in-flight tracking",
        "bare worker",
        f"ratio {ratio:.3f} ({median(guarded_rate):.0f} vs {median(bare_rate):.0f} tasks/s, "
        "prefork -c 2)",
        "ratio >= 0.90",
        ratio >= 0.90,
        rounds=args.rounds,
        tasks_per_batch=n,
        ratios=ratios,
        bare_per_s=bare_rate,
        guarded_per_s=guarded_rate,
    )


if __name__ == "__main__":
    main()
