"""Drain: from the end of the last running job to `drain` returning.

A guarded prefork worker (4 processes) runs 4 jobs of 0.4-1.0 s; once all are in the
in-flight registry, maintenance goes on and this process calls `guard.drain()`
(`maintenance_guard.drain.drain`, default poll 0.25 s). Each job stamps the moment it
ends; the figure is ``drain`` returning minus the latest stamp, in drain polls: ``drain``
sees the last job gone at its first poll after the worker has removed it from the
in-flight registry, so the figure is at most one poll plus that removal and one read.
Target: median <= 1 poll (the expected median is half a poll).
"""

from __future__ import annotations

import inspect
import os
import random
import signal
import subprocess
import time

from .common import (
    ROOT,
    cleaned,
    emit,
    median,
    note,
    parse_args,
    redis_url,
    start_bench_worker,
    unique_prefix,
)


def main() -> None:
    args = parse_args(__doc__ or "")
    prefix = unique_prefix("drain")
    os.environ["MGBENCH_PREFIX"] = prefix
    os.environ["MGBENCH_GUARDED"] = "0"  # this process publishes with a bare app
    from maintenance_guard import MaintenanceGuard, MaintenanceMode
    from maintenance_guard.drain import drain

    poll = float(inspect.signature(drain).parameters["poll_interval"].default)

    from .celery_app import work

    queue = f"{prefix}-q"
    lags: list[float] = []
    with cleaned(prefix) as client:
        guard = MaintenanceGuard.from_url(redis_url(), key_prefix=prefix)
        env = dict(os.environ)
        env["MGBENCH_GUARDED"] = "1"
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        worker = start_bench_worker(queue, f"{prefix}@%h", 4, env)
        try:
            for r in range(args.rounds):
                guard.disable(by="bench")
                ends = f"{prefix}:ends:{r}"
                durations = [d + random.uniform(0, 0.1) for d in (0.4, 0.6, 0.8, 1.0)]
                for seconds in durations:
                    work.apply_async((seconds, ends), queue=queue)
                deadline = time.monotonic() + 60
                while guard.store.count_inflight(time.time()) < len(durations):
                    if worker.poll() is not None:
                        raise SystemExit(f"worker exited: {worker.stderr.read()[-500:]}")  # type: ignore[union-attr]
                    if time.monotonic() > deadline:
                        raise SystemExit("the jobs did not all start within 60 s")
                    time.sleep(0.01)
                guard.enable(MaintenanceMode.NORMAL, reason="bench drain", by="bench")
                result = guard.drain(timeout=30)
                returned = time.time()
                if not result.drained:
                    raise SystemExit(f"drain timed out with {len(result.remaining)} jobs")
                stamps = [float(x) for x in client.lrange(ends, 0, -1)]
                if len(stamps) != len(durations):
                    raise SystemExit(f"{len(stamps)} of {len(durations)} jobs stamped their end")
                lags.append(returned - max(stamps))
                note(f"drain round {r + 1}: returned {lags[-1] * 1000:.0f} ms after the last job")
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
            guard.disable(by="bench")
            guard.stop(timeout=2)
    worst = max(lags)
    typical = median(lags)
    emit(
        "drain: from last job's end to drain returning",
        f"drain's poll interval ({poll:.2f} s)",
        f"median {typical * 1000:.0f} ms = {typical / poll:.2f} polls, worst "
        f"{worst * 1000:.0f} ms = {worst / poll:.2f} polls",
        "median <= 1 poll",
        typical <= poll,
        rounds=args.rounds,
        poll_s=poll,
        lag_s=lags,
    )


if __name__ == "__main__":
    main()
