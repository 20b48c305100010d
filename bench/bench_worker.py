"""Worker throughput of no-op tasks with in-flight tracking against a bare worker,
on a quiet machine and on a loaded one.

Two long-lived prefork workers (2 processes each): one of the bare app, one of the
guarded app (in-flight registry, heartbeats, worker re-check). Batches alternate between
them: a start marker, N no-op tasks and an end marker are staged in a spare list, then
renamed onto the worker's queue at once. Throughput is N over the time between the two
markers, as the worker stamped them; a round's ratio is the median of its pairs.

Quiet rounds first; then the benchmark starts 3 busy-loop processes (normal nice), waits
until the 1-minute load average is 3 or more (warm batches meanwhile), runs the loaded
rounds (at least five, even with ``--quick``) and stops them. The target is judged on
the loaded rounds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
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
        self.cpu_per_task = 0.0

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the worker's processes (main and pool) used so far."""
        main = self.proc.pid
        try:
            children = Path(f"/proc/{main}/task/{main}/children").read_text().split()
        except OSError:
            children = []
        total = 0
        for pid in [str(main), *children]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # a pool process that just ended
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        return total / CLOCK_TICKS

    def batch(self, n: int, staging: str) -> float:
        """Tasks per second over one batch of ``n`` no-op tasks (0: just wait until up);
        `cpu_per_task` is set to the CPU seconds the worker used for each."""
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
        cpu = self.cpu_seconds()
        self.client.rename(staging, self.queue)
        deadline = time.monotonic() + 180
        # Both stamps: with two pool processes the markers of a short batch run side by side.
        while self.client.exists(start_key, end_key) < 2:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.side} worker exited: {self.proc.stderr.read()[-500:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.side} worker did not finish {n} tasks within 180 s")
            time.sleep(0.02)
        self.cpu_per_task = (self.cpu_seconds() - cpu) / max(n, 1)
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


BURNERS = 3
LOAD_TARGET = 3.0
LOAD_WAIT = 150.0  # seconds at most for the load average to reach LOAD_TARGET
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def start_burners(n: int) -> list[subprocess.Popen[bytes]]:
    """``n`` processes that spin on the CPU until killed."""
    return [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(n)
    ]


def stop_burners(burners: list[subprocess.Popen[bytes]]) -> None:
    for proc in burners:
        proc.kill()
    for proc in burners:
        proc.wait(10)


class Rounds:
    """Ratios and rates of the rounds of one phase (quiet or loaded)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ratios: list[float] = []
        self.bare: list[float] = []
        self.guarded: list[float] = []
        self.loads: list[float] = []
        self.cpu_ratios: list[float] = []  # guarded CPU per task / bare CPU per task
        self.cpu_us: dict[str, list[float]] = {"bare": [], "guarded": []}

    def run(self, workers: list[Worker], staging: str, n: int, pairs: int, r: int) -> None:
        load = os.getloadavg()[0]
        time_per = {"bare": 0.0, "guarded": 0.0}
        cpu_per = {"bare": 0.0, "guarded": 0.0}
        pair_ratios: list[float] = []
        for i in range(pairs):
            order = workers if (r + i) % 2 == 0 else workers[::-1]
            one = {w.side: n / w.batch(n, staging) for w in order}
            for w in workers:
                cpu_per[w.side] += w.cpu_per_task / pairs
            for side, took in one.items():
                time_per[side] += took
            pair_ratios.append(one["bare"] / one["guarded"])
        for side, cpu in cpu_per.items():
            self.cpu_us[side].append(cpu * 1e6)
        self.cpu_ratios.append(cpu_per["guarded"] / cpu_per["bare"])
        self.loads.append(min(load, os.getloadavg()[0]))
        self.bare.append(pairs * n / time_per["bare"])
        self.guarded.append(pairs * n / time_per["guarded"])
        # The median pair, so a burst of load from elsewhere does not decide it.
        self.ratios.append(median(pair_ratios))
        cpu = self.cpu_us
        note(
            f"worker {self.name} round {r + 1} (load average {self.loads[-1]:.1f}): bare "
            f"{self.bare[-1]:.0f}/s, guarded {self.guarded[-1]:.0f}/s, ratio "
            f"{self.ratios[-1]:.3f}; worker CPU a task {cpu['bare'][-1]:.0f} vs "
            f"{cpu['guarded'][-1]:.0f} µs"
        )

    def summary(self) -> str:
        return (
            f"ratio {median(self.ratios):.3f} ({median(self.guarded):.0f} vs "
            f"{median(self.bare):.0f} tasks/s; worker CPU a task "
            f"{median(self.cpu_us['guarded']):.0f} vs {median(self.cpu_us['bare']):.0f} µs)"
        )


def main() -> None:
    args = parse_args(__doc__ or "")
    # (tasks a batch, pairs a round): quiet, then loaded. Loaded batches are short and
    # many, so that a pair's two batches meet the same load.
    (n, pairs), (ln, lpairs) = ((300, 2), (100, 8)) if args.quick else ((400, 4), (150, 12))
    # The target is judged on the loaded rounds, whose pairs scatter most (0.82-1.27 with
    # two rounds of six): at least five of them, even with --quick.
    loaded_rounds = max(args.rounds, 5)
    prefix = unique_prefix("wrk")
    quiet, loaded = Rounds("quiet"), Rounds("loaded")
    os.environ["MGBENCH_PREFIX"] = prefix
    os.environ["MGBENCH_GUARDED"] = "0"  # this process publishes with the bare app
    staging = f"{prefix}-staging"
    burners: list[subprocess.Popen[bytes]] = []
    with cleaned(prefix) as client:
        workers = [Worker(False, prefix, client), Worker(True, prefix, client)]
        try:
            for w in workers:
                w.batch(0, staging)  # up and consuming
                w.batch(n // 4, staging)  # warm
            for r in range(args.rounds):
                quiet.run(workers, staging, n, pairs, r)
            burners = start_burners(BURNERS)
            waited = time.monotonic()
            while os.getloadavg()[0] < LOAD_TARGET and time.monotonic() - waited < LOAD_WAIT:
                for w in workers:
                    w.batch(n // 4, staging)  # also load, and keeps both warm
            note(
                f"worker: load average {os.getloadavg()[0]:.1f} after "
                f"{time.monotonic() - waited:.0f} s with {BURNERS} busy loops"
            )
            for r in range(loaded_rounds):
                loaded.run(workers, staging, ln, lpairs, r)
        finally:
            stop_burners(burners)
            for w in workers:
                w.stop()
            client.delete(staging)
    ratio = median(loaded.ratios)
    low = min(loaded.loads)
    emit(
        "worker throughput of no-op tasks with in-flight tracking",
        "bare worker",
        f"loaded (load average {low:.1f}-{max(loaded.loads):.1f}, {BURNERS} busy loops): "
        f"{loaded.summary()}; quiet: {quiet.summary()}; prefork -c 2",
        f"ratio >= 0.95 at load average {LOAD_TARGET:.0f}+",
        ratio >= 0.95 and low >= LOAD_TARGET,
        rounds={"quiet": args.rounds, "loaded": loaded_rounds},
        tasks_per_batch={"quiet": n, "loaded": ln},
        pairs_per_round={"quiet": pairs, "loaded": lpairs},
        loaded_ratios=loaded.ratios,
        loaded_load_averages=loaded.loads,
        loaded_bare_per_s=loaded.bare,
        loaded_guarded_per_s=loaded.guarded,
        quiet_ratios=quiet.ratios,
        quiet_bare_per_s=quiet.bare,
        quiet_guarded_per_s=quiet.guarded,
        loaded_cpu_us_per_task=loaded.cpu_us,
        loaded_cpu_ratios=loaded.cpu_ratios,
        quiet_cpu_us_per_task=quiet.cpu_us,
    )


if __name__ == "__main__":
    main()
