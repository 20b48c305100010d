"""Queue pause: from `pause` returning to the last of 4 workers no longer consuming the
queue, and from `resume` returning to consumption restarted, side by side with Celery's
own ``control.cancel_consumer``/``add_consumer`` broadcast on the same workers.

Four guarded prefork workers (``-c 1``, prefetch 16) consume one queue while this process
publishes a probe every 5 ms; each probe records when it was sent and when it started.
"Stopped" is the send time of the latest probe any worker still started after the pause
call returned (later probes stayed in the broker); "restarted" is the first start after
the resume call returned, and the time until all 4 workers had started one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable

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

WORKERS = 4
PROBE_SPACING = 0.005  # seconds between probes: the resolution of "stopped"


def main() -> None:
    args = parse_args(__doc__ or "", default_rounds=3)
    prefix = unique_prefix("pause")
    os.environ["MGBENCH_PREFIX"] = prefix
    os.environ["MGBENCH_GUARDED"] = "0"  # this process publishes with a bare app
    from maintenance_guard import MaintenanceGuard
    from maintenance_guard.pausing import worker_queues

    from .celery_app import app, probe

    queue = f"{prefix}-q"
    hostnames = [f"w{i}.{prefix}@bench" for i in range(WORKERS)]
    results: dict[str, list[tuple[float, float, float]]] = {"guard": [], "celery": []}
    with cleaned(prefix) as client:
        guard = MaintenanceGuard.from_url(redis_url(), key_prefix=prefix)
        env = dict(os.environ)
        env["MGBENCH_GUARDED"] = "1"
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        workers = [start_bench_worker(queue, name, 1, env) for name in hostnames]
        try:
            deadline = time.monotonic() + 60
            while len(worker_queues(guard) or {}) < WORKERS:
                if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                    raise SystemExit("the bench workers did not all start")
                time.sleep(0.05)

            def by_guard() -> tuple[Callable[[], None], Callable[[], None]]:
                return (
                    lambda: guard.pause_queues([queue], reason="bench", by="bench"),
                    lambda: guard.resume_queues([queue], by="bench") and None,
                )

            def by_celery() -> tuple[Callable[[], None], Callable[[], None]]:
                return (
                    lambda: app.control.cancel_consumer(
                        queue, destination=hostnames, reply=True, timeout=2
                    ),
                    lambda: app.control.add_consumer(
                        queue, destination=hostnames, reply=True, timeout=2
                    ),
                )

            for r in range(args.rounds):
                for name, way in (("guard", by_guard), ("celery", by_celery)):
                    pause, resume = way()
                    lags = one_round(
                        client, probe, queue, f"{prefix}:probes:{name}:{r}", pause, resume
                    )
                    results[name].append(lags)
                    note(
                        f"round {r + 1} {name}: stopped {lags[0] * 1000:.0f} ms, restarted "
                        f"{lags[1] * 1000:.0f} ms (all {WORKERS}: {lags[2] * 1000:.0f} ms)"
                    )
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait(10)
            client.delete(queue)
            guard.stop(timeout=2)
    stop_g = median([x[0] for x in results["guard"]])
    stop_c = median([x[0] for x in results["celery"]])
    start_g = median([x[1] for x in results["guard"]])
    all_g = median([x[2] for x in results["guard"]])
    all_c = median([x[2] for x in results["celery"]])
    emit(
        f"queue pause: pause returning to the last of {WORKERS} workers stopped; "
        "resume to restarted",
        "celery control cancel_consumer/add_consumer (reply=True), same workers",
        f"stopped {ms(stop_g)} (cancel_consumer {ms(stop_c)}); restarted "
        f"{start_g * 1000:.0f} ms, all {WORKERS} {all_g * 1000:.0f} ms (add_consumer "
        f"{all_c * 1000:.0f} ms)",
        "stopped <= cancel_consumer's + one 5 ms probe spacing",
        stop_g <= stop_c + PROBE_SPACING,
        rounds=args.rounds,
        guard=results["guard"],
        celery=results["celery"],
    )


def ms(lag: float) -> str:
    """A stop lag; 0 means no probe sent after the call returned ever started, which
    the 5 ms probe spacing can only place under 5 ms."""
    return f"{lag * 1000:.0f} ms" if lag > 0 else "< 5 ms"


def one_round(
    client: object,
    probe: object,
    queue: str,
    key: str,
    pause: Callable[[], object],
    resume: Callable[[], object],
) -> tuple[float, float, float]:
    """(stopped lag, first restart lag, all-restarted lag) of one pause and resume."""
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            probe.apply_async((time.time(), key), queue=queue)  # type: ignore[attr-defined]
            time.sleep(PROBE_SPACING)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    time.sleep(0.5)  # flowing
    pause()
    paused_at = time.time()
    time.sleep(1.5)
    stop.set()
    publisher.join()
    resume()
    resumed_at = time.time()
    deadline = time.monotonic() + 30
    hosts_after: dict[str, float] = {}
    entries: list[tuple[float, float, str]] = []
    while time.monotonic() < deadline:
        entries = []
        for raw in client.lrange(key, 0, -1):  # type: ignore[attr-defined]
            text = raw.decode() if isinstance(raw, bytes) else raw
            sent, started, host = text.split(" ", 2)
            entries.append((float(sent), float(started), host))
        hosts_after = {}
        for _sent, started, host in entries:
            if started > resumed_at:
                hosts_after[host] = min(hosts_after.get(host, started), started)
        if len(hosts_after) >= WORKERS:
            break
        time.sleep(0.05)
    else:
        raise SystemExit(f"only {len(hosts_after)} of {WORKERS} workers restarted")
    before = [sent for sent, started, _ in entries if started < resumed_at]
    stopped = max(0.0, max(before) - paused_at) if before else 0.0
    firsts = sorted(hosts_after.values())
    # Drain what is left so the next round starts on an empty queue.
    deadline = time.monotonic() + 30
    while client.llen(queue) and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.05)
    return stopped, firsts[0] - resumed_at, firsts[-1] - resumed_at


if __name__ == "__main__":
    main()
