"""State propagation to 8 processes after `enable` returns, and missed-notification repair.

Eight observer processes each run a guard; the benchmark flips maintenance on and off and
each observer stamps the moment its guard installs the new version. Latency is that stamp
minus the moment `enable`/`disable` returned in this process (0 if it was seen earlier).
The repair part repeats this with observers whose pub/sub is deaf (every notification
lost), so only the version poll (default 1 s) brings the change.
"""

from __future__ import annotations

import queue
import random
import subprocess
import sys
import threading
import time

from maintenance_guard import MaintenanceGuard, MaintenanceMode

from .common import (
    ROOT,
    cleaned,
    emit,
    median,
    note,
    parse_args,
    percentile,
    redis_url,
    unique_prefix,
)

PROCESSES = 8


class Observers:
    """N observer processes; their ``seen`` lines arrive on one queue."""

    def __init__(self, prefix: str, n: int, deaf: bool) -> None:
        self.lines: queue.Queue[tuple[int, str]] = queue.Queue()
        self.procs: list[subprocess.Popen[str]] = []
        extra = ["--deaf"] if deaf else []
        for i in range(n):
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.propagation_observer", redis_url(), prefix, *extra],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(i, proc), daemon=True).start()
        ready = 0
        deadline = time.monotonic() + 30
        while ready < n:
            _i, line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line.startswith("ready"):
                ready += 1

    def _read(self, i: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.put((i, line.strip()))

    def wait_version(self, version: int, timeout: float) -> dict[int, float]:
        """Each observer's time of seeing ``version``; raises if one misses it."""
        seen: dict[int, float] = {}
        deadline = time.monotonic() + timeout
        while len(seen) < len(self.procs):
            try:
                i, line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(
                    f"only {len(seen)}/{len(self.procs)} observers saw version {version} "
                    f"within {timeout}s"
                ) from None
            parts = line.split()
            if parts[0] == "seen" and int(parts[1]) == version:
                seen[i] = float(parts[2])
        return seen

    def close(self) -> None:
        for proc in self.procs:
            try:
                if proc.stdin:
                    proc.stdin.close()
                proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(5)


def flip(guard: MaintenanceGuard, on: bool) -> tuple[int, float]:
    """Change the state; returns the new version and the moment the call returned."""
    if on:
        status = guard.enable(MaintenanceMode.NORMAL, reason="bench", by="bench")
    else:
        status = guard.disable(by="bench")
    return status.version, time.time()


def measure(guard: MaintenanceGuard, obs: Observers, changes: int, timeout: float) -> list[float]:
    latencies: list[float] = []
    for _ in range(changes):
        time.sleep(random.uniform(0.01, 0.05))  # not in step with anyone's poll
        version, returned = flip(guard, not guard.current().is_active)
        for stamp in obs.wait_version(version, timeout).values():
            latencies.append(max(0.0, stamp - returned) * 1000)
    return latencies


def main() -> None:
    args = parse_args(__doc__ or "")
    changes = 10 if args.quick else 30
    repair_changes = 1 if args.quick else 2
    prefix = unique_prefix("prop")
    with cleaned(prefix):
        guard = MaintenanceGuard.from_url(redis_url(), key_prefix=prefix)
        guard.start()
        fast_p99: list[float] = []
        fast_all: list[float] = []
        repair_max: list[float] = []
        repair_all: list[float] = []
        try:
            obs = Observers(prefix, PROCESSES, deaf=False)
            try:
                for r in range(args.rounds):
                    lat = measure(guard, obs, changes, timeout=10)
                    fast_all += lat
                    fast_p99.append(percentile(lat, 99))
                    note(f"propagation round {r + 1}: p99 {fast_p99[-1]:.2f} ms")
            finally:
                obs.close()
            deaf = Observers(prefix, PROCESSES, deaf=True)
            try:
                for r in range(args.rounds):
                    lat = measure(guard, deaf, repair_changes, timeout=10)
                    repair_all += lat
                    repair_max.append(max(lat))
                    note(f"repair round {r + 1}: worst {repair_max[-1]:.0f} ms")
            finally:
                deaf.close()
        finally:
            guard.stop(timeout=2)
    p99 = median(fast_p99)
    worst_repair = max(repair_all) / 1000
    met = p99 <= 50 and worst_repair <= 1.5
    emit(
        f"state propagation to {PROCESSES} processes after enable returns",
        "",
        f"p99 {p99:.1f} ms (p50 {median(fast_all):.1f} ms, 0 = seen before enable returned; "
        f"{50 / max(p99, 0.1):.0f}x under); "
        f"missed notification repaired in <= {worst_repair:.2f} s "
        f"(median {median(repair_all) / 1000:.2f} s)",
        "p99 <= 50 ms; repair <= 1.5 s",
        met,
        rounds=args.rounds,
        changes_per_round=changes,
        samples=len(fast_all),
        p99_per_round_ms=fast_p99,
        max_ms=max(fast_all),
        repair_worst_per_round_ms=repair_max,
        repair_samples=len(repair_all),
    )


if __name__ == "__main__":
    main()
