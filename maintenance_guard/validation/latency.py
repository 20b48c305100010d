"""The cost of `MaintenanceGuard.check` in this process, measured on a private copy of
the state (a `MemoryStore`), so timing thousands of checks records nothing anywhere."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from time import perf_counter_ns
from typing import Any

from ..errors import InvalidInput, MaintenanceActive
from ..guard import MaintenanceGuard
from ..status import MaintenanceStatus
from ..store import MemoryStore


def measure_check_latency(
    guard: MaintenanceGuard, calls: int = 5000, operation: str = "caption_generation"
) -> dict[str, Any]:
    """Time ``calls`` `check` calls in this process, in the current mode and with
    maintenance off; p50/p99/max in microseconds. Touches no shared store."""
    if not 100 <= calls <= 1_000_000:
        raise InvalidInput("latency calls must be between 100 and 1000000")
    current = guard.current()
    out: dict[str, Any] = {"calls": calls, "operation": operation}
    cases = [("current", current), ("off", MaintenanceStatus())]
    for label, status in cases:
        store = MemoryStore()
        if status.is_active:
            store.restore_state(status, {"type": "latency_probe"})
        probe = MaintenanceGuard(store, guard.settings, catalog=guard.catalog)
        try:
            probe.start()
            samples = _time_checks(probe, calls, operation)
        finally:
            probe.stop(timeout=2)
        out[label] = {
            "mode": status.mode.value if status.mode else None,
            "p50_us": round(_percentile(samples, 50) / 1000, 2),
            "p99_us": round(_percentile(samples, 99) / 1000, 2),
            "max_us": round(max(samples) / 1000, 2),
            "mean_us": round(statistics.fmean(samples) / 1000, 2),
        }
    return out


def _time_checks(probe: MaintenanceGuard, calls: int, operation: str) -> list[int]:
    samples: list[int] = []
    check = probe.check
    for i in range(calls):
        t0 = perf_counter_ns()
        try:
            check(operation, surface="python", target="latency-probe", user=f"u{i % 50}")
        except MaintenanceActive:
            pass
        samples.append(perf_counter_ns() - t0)
    return samples


def _percentile(samples: Sequence[int], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return float(ordered[index])
