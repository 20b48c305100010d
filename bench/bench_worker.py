"""Worker throughput of no-op tasks with in-flight tracking against a bare worker.

Each round fills a queue with a start marker, N no-op tasks and an end marker, then
starts a fresh prefork worker (2 processes) on it, bare app or guarded app (in-flight
registry, heartbeats, worker re-check), alternating which goes first. Throughput is N
over the time between the two markers, as the worker stamped them; worker start-up is
outside the measured span.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from .common import ROOT, cleaned, emit, median, note, parse_args, unique_prefix


def run_side(guarded: bool, prefix: str, n: int, client: object) -> float:
    """Tasks per second of one worker over one batch."""
    os.environ["MGBENCH_PREFIX"] = prefix
    from .celery_app import mark, noop

    side = "guarded" if guarded else "bare"
    queue = f"{prefix}-{side}"
    start_key, end_key = f"{prefix}:start", f"{prefix}:end"
    client.delete(queue, start_key, end_key)  # type: ignore[attr-defined]
    mark.apply_async((start_key,), queue=queue)
    for _ in range(n):
        noop.apply_async(queue=queue)
    mark.apply_async((end_key,), queue=queue)
    env = dict(os.environ)
    env["MGBENCH_GUARDED"] = "1" if guarded else "0"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.celery_app",
            "worker",
            "-P",
            "prefork",
            "-c",
            "2",
            "-Q",
            queue,
            "-l",
            "warning",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"{prefix}-{side}@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while client.get(end_key) is None:  # type: ignore[attr-defined]
            if worker.poll() is not None:
                raise SystemExit(f"{side} worker exited: {worker.stderr.read()[-500:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{side} worker did not finish {n} tasks within 180 s")
            time.sleep(0.05)
        started = float(client.get(start_key))  # type: ignore[attr-defined]
        ended = float(client.get(end_key))  # type: ignore[attr-defined]
        left = int(client.llen(queue))  # type: ignore[attr-defined]
        if left:
            raise SystemExit(f"{left} messages still queued after the end marker ran")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
        client.delete(queue)  # type: ignore[attr-defined]
    return n / (ended - started)


def main() -> None:
    args = parse_args(__doc__ or "")
    n = 1000 if args.quick else 3000
    prefix = unique_prefix("wrk")
    ratios: list[float] = []
    bare_rate: list[float] = []
    guarded_rate: list[float] = []
    with cleaned(prefix) as client:
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            rates = {g: run_side(g, prefix, n, client) for g in order}
            bare_rate.append(rates[False])
            guarded_rate.append(rates[True])
            ratios.append(rates[True] / rates[False])
            note(
                f"worker round {r + 1}: bare {rates[False]:.0f}/s, guarded "
                f"{rates[True]:.0f}/s, ratio {ratios[-1]:.3f}"
            )
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
