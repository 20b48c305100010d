"""State propagation to 8 processes after `enable` returns, and missed-notification repair.

Eight observer processes each run a guard; the benchmark flips maintenance on and off and
each observer stamps the moment its guard installs the new version. Latency is that stamp
minus the moment `enable`/`disable` returned in this process (0 if it was seen earlier).
The baseline, in the same observers and rounds (alternating before and after): a plain
redis-py PUBLISH to a plain subscriber, from the call returning to the message's arrival.
The repair part repeats this with observers whose pub/sub is deaf (every notification
lost), so only the version poll (default 1 s) brings the change: counted in polls.
"""

from __future__ import annotations

import queue
import random
import subprocess
import sys
import threading
import time
from typing import Any

from maintenance_guard import MaintenanceGuard, MaintenanceMode
from maintenance_guard.settings import GuardSettings

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
P99_RATIO = 3.0  # p99 at most this many times the bare pub/sub p99
REPAIR_POLLS = 1.5  # a missed notification repaired within this many version polls


class Observers:
    """N observer processes; their ``seen`` lines arrive on one queue."""

    def __init__(self, prefix: str, n: int, deaf: bool) -> None:
        self.lines: queue.Queue[tuple[int, str]] = queue.Queue()
        self.sent = 0  # bare pub/sub messages sent so far
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

    def wait_version(self, version: int, timeout: float, kind: str = "seen") -> dict[int, float]:
        """Each observer's time of seeing ``version`` (``kind`` "bare": bare pub/sub
        message ``version``); raises if one misses it."""
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
            if parts[0] == kind and int(parts[1]) == version:
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


def measure_bare(client: Any, channel: str, obs: Observers, messages: int) -> list[float]:
    """The baseline: plain PUBLISHes to the observers' plain subscribers."""
    latencies: list[float] = []
    for _ in range(messages):
        time.sleep(random.uniform(0.01, 0.05))
        obs.sent += 1
        client.publish(channel, obs.sent)
        returned = time.time()
        for stamp in obs.wait_version(obs.sent, 10, kind="bare").values():
            latencies.append(max(0.0, stamp - returned) * 1000)
    return latencies


def main() -> None:
    args = parse_args(__doc__ or "")
    changes = 10 if args.quick else 30
    repair_changes = 1 if args.quick else 2
    prefix = unique_prefix("prop")
    with cleaned(prefix) as client:
        guard = MaintenanceGuard.from_url(redis_url(), key_prefix=prefix)
        guard.start()
        fast_p99: list[float] = []
        fast_all: list[float] = []
        bare_p99: list[float] = []
        repair_max: list[float] = []
        repair_all: list[float] = []
        try:
            obs = Observers(prefix, PROCESSES, deaf=False)
            try:
                for r in range(args.rounds):
                    if r % 2:
                        bare_lat = measure_bare(client, f"{prefix}:bare", obs, changes)
                    lat = measure(guard, obs, changes, timeout=10)
                    if not r % 2:
                        bare_lat = measure_bare(client, f"{prefix}:bare", obs, changes)
                    fast_all += lat
                    fast_p99.append(percentile(lat, 99))
                    bare_p99.append(percentile(bare_lat, 99))
                    note(
                        f"propagation round {r + 1}: p99 {fast_p99[-1]:.2f} ms "
                        f"(bare pub/sub {bare_p99[-1]:.2f} ms)"
                    )
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
    bare = median(bare_p99)
    ratio = p99 / max(bare, 0.01)
    poll = GuardSettings().poll_interval
    repair_polls = max(repair_all) / 1000 / poll
    met = ratio <= P99_RATIO and repair_polls <= REPAIR_POLLS
    emit(
        f"state propagation to {PROCESSES} processes after enable returns",
        "a plain PUBLISH to plain subscribers in the same processes; the version poll "
        f"({poll:.0f} s)",
        f"p99 {p99:.1f} ms = {ratio:.1f}x the bare pub/sub's {bare:.1f} ms (p50 "
        f"{median(fast_all):.1f} ms, 0 = seen before enable returned); missed notification "
        f"repaired in <= {repair_polls:.2f} polls ({max(repair_all) / 1000:.2f} s, median "
        f"{median(repair_all) / 1000:.2f} s)",
        f"p99 <= {P99_RATIO:.0f}x bare; repair <= {REPAIR_POLLS} polls",
        met,
        rounds=args.rounds,
        changes_per_round=changes,
        samples=len(fast_all),
        p99_per_round_ms=fast_p99,
        bare_p99_per_round_ms=bare_p99,
        max_ms=max(fast_all),
        repair_worst_per_round_ms=repair_max,
        repair_samples=len(repair_all),
    )


if __name__ == "__main__":
    main()
