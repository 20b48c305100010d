"""Prometheus metrics: fleet state read at scrape time, plus durations others observe.

`instrument(guard)` returns a `CollectorRegistry` holding a collector that reads the
guard's state when scraped (nothing is added to the hot path) and the process metrics
(drain and revocation durations, state changes seen). Adapters call `observe_drain` and
`observe_revocation`. Under prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` set before import), the process metrics of every process on
the host are merged from that directory; the fleet metrics come from Redis either way.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .errors import InvalidInput, StoreUnavailable
from .inflight import InflightRegistry
from .modes import MaintenanceMode
from .status import MaintenanceStatus
from .store import RedisStore

if TYPE_CHECKING:
    from flask import Blueprint, Flask

    from .guard import MaintenanceGuard

logger = logging.getLogger("maintenance_guard")
# Guards whose state changes are already counted (instrument may be called twice).
_LISTENING: weakref.WeakSet[MaintenanceGuard] = weakref.WeakSet()

_DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))

# Process metrics: created without a registry, added to each registry `instrument` makes.
DRAIN_SECONDS = Histogram(
    "maintenance_guard_drain_seconds",
    "Time a drain waited for in-flight jobs to finish.",
    buckets=_DURATION_BUCKETS,
    registry=None,
)
REVOCATION_SECONDS = Histogram(
    "maintenance_guard_revocation_seconds",
    "Time from an emergency's start to the revocation of the jobs that outlived its grace.",
    buckets=_DURATION_BUCKETS,
    registry=None,
)
STATE_CHANGES = Counter(
    "maintenance_guard_state_changes_seen",
    "State changes this process saw, by the mode they switched to (off when disabled).",
    ["mode"],
    registry=None,
)
NOTIFICATIONS = Counter(
    "maintenance_guard_notifications",
    "Notification sends by this process, by target (URL, secrets masked) and outcome: "
    "delivered, retried (a failed try that will be tried again) or failed (given up).",
    ["target", "outcome"],
    registry=None,
)
PROCESS_METRICS = (DRAIN_SECONDS, REVOCATION_SECONDS, STATE_CHANGES, NOTIFICATIONS)


def observe_drain(seconds: float) -> None:
    """Record how long a drain took."""
    DRAIN_SECONDS.observe(max(0.0, float(seconds)))


def observe_revocation(seconds: float) -> None:
    """Record how long an emergency took to revoke the jobs past its grace period."""
    REVOCATION_SECONDS.observe(max(0.0, float(seconds)))


def note_delivery(target: str, outcome: str) -> None:
    """Count one notification send (see `NOTIFICATIONS`)."""
    NOTIFICATIONS.labels(target=target, outcome=outcome).inc()


def note_state_change(status: MaintenanceStatus) -> None:
    """Count one state change seen by this process (the guard listener `instrument` adds)."""
    STATE_CHANGES.labels(mode=status.mode.value if status.mode else "off").inc()


def multiprocess_dir() -> str | None:
    """The prometheus-client multiprocess directory, if multiprocess mode is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


class GuardCollector(Collector):
    """Reads the guard's state (memory) and the fleet's counters (Redis) at scrape time.

    A Redis failure during a scrape yields ``maintenance_guard_store_up 0`` and the
    in-memory metrics; the scrape itself never fails.
    """

    def __init__(self, guard: MaintenanceGuard) -> None:
        self.guard = guard

    def describe(self) -> list[Metric]:
        return []  # names are fixed; skip the registry's duplicate check by collection

    def collect(self) -> Iterator[Metric]:
        guard = self.guard
        status = guard.status(with_jobs=False)  # memory; reads the store if no watcher
        yield _gauge(
            "maintenance_guard_active",
            "1 while maintenance (any mode) is on.",
            1.0 if status.is_active else 0.0,
        )
        mode = GaugeMetricFamily(
            "maintenance_guard_mode", "1 for the current maintenance mode.", labels=["mode"]
        )
        for m in MaintenanceMode:
            mode.add_metric([m.value], 1.0 if status.mode is m else 0.0)
        yield mode
        yield _gauge(
            "maintenance_guard_state_version",
            "Version of the maintenance state this process knows (bumped by every change).",
            float(status.version),
        )
        yield _gauge(
            "maintenance_guard_state_known",
            "1 once this process has read the state from the store.",
            1.0 if guard.state_known else 0.0,
        )
        if status.changed_at:
            yield _gauge(
                "maintenance_guard_last_change_timestamp_seconds",
                "When the maintenance state last changed (epoch seconds).",
                status.changed_at,
            )
        if status.is_active and status.estimated_completion is not None:
            yield _gauge(
                "maintenance_guard_expected_end_timestamp_seconds",
                "When the maintenance on now was announced to end (epoch seconds); absent "
                "when it has no duration.",
                status.estimated_completion,
            )
        now = guard.now()
        pauses = status.pauses(now)
        yield _gauge(
            "maintenance_guard_paused_queues",
            "Queues paused now (`maintenance-guard pause`).",
            float(len(pauses)),
        )
        paused = GaugeMetricFamily(
            "maintenance_guard_queue_paused",
            "1 for each queue paused now; the pause's end (epoch seconds) in "
            "maintenance_guard_queue_pause_end_timestamp_seconds.",
            labels=["queue"],
        )
        ends = GaugeMetricFamily(
            "maintenance_guard_queue_pause_end_timestamp_seconds",
            "When each timed queue pause ends (epoch seconds).",
            labels=["queue"],
        )
        for pause in pauses:
            paused.add_metric([pause.queue], 1.0)
            if pause.ends_at is not None:
                ends.add_metric([pause.queue], pause.ends_at)
        yield paused
        yield ends
        errors = CounterMetricFamily(
            "maintenance_guard_store_errors",
            "Store (Redis) errors this process met.",
        )
        errors.add_metric([], float(guard.store_errors))
        yield errors
        try:
            counts, inflight = self._read_fleet()
        except StoreUnavailable:
            guard.store_errors += 1
            yield _gauge("maintenance_guard_store_up", "1 if the store answered.", 0.0)
            return
        yield _gauge("maintenance_guard_store_up", "1 if the store answered.", 1.0)
        yield from _attempt_metrics(counts)
        jobs = GaugeMetricFamily(
            "maintenance_guard_inflight_jobs",
            "Jobs in flight across the fleet, by operation ('-' when unclassified).",
            labels=["operation"],
        )
        for operation, n in sorted(inflight.items()):
            jobs.add_metric([operation], float(n))
        yield jobs

    def _read_fleet(self) -> tuple[dict[str, int], dict[str, int]]:
        store = self.guard.store
        counts = store.read_attempt_counts()
        if not isinstance(store, RedisStore):
            return counts, {"-": store.count_inflight(self.guard.now())}
        return counts, InflightRegistry(store, now=self.guard.now).count_by_operation()


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _attempt_metrics(counts: dict[str, int]) -> Iterator[Metric]:
    blocked = CounterMetricFamily(
        "maintenance_guard_blocked_attempts",
        "Attempts refused by maintenance across the fleet, by operation and surface.",
        labels=["operation", "surface"],
    )
    would = CounterMetricFamily(
        "maintenance_guard_test_would_block",
        "Test-mode attempts the given mode would have refused, by operation and surface "
        "(cleared by `maintenance-guard reset-test`).",
        labels=["operation", "surface", "mode"],
    )
    beat = CounterMetricFamily(
        "maintenance_guard_beat_skipped",
        "Beat entries skipped because their queue was paused with --beat, by queue.",
        labels=["queue"],
    )
    for field, n in sorted(counts.items()):
        parts = field.split(":", 2)
        if len(parts) != 3:
            continue
        kind, surface, operation = parts
        if kind == "beat_skipped":
            beat.add_metric([operation], float(n))
        elif kind == "blocked":
            blocked.add_metric([operation, surface], float(n))
        elif kind == "would_block_normal":
            would.add_metric([operation, surface, "normal"], float(n))
        elif kind == "would_block_emergency":
            would.add_metric([operation, surface, "emergency"], float(n))
    yield blocked
    yield would
    yield beat


def instrument(
    guard: MaintenanceGuard, registry: CollectorRegistry | None = None
) -> CollectorRegistry:
    """A registry exposing ``guard``'s metrics; counts the state changes it sees.

    Give ``registry`` to add to an existing one (e.g. prometheus-client's ``REGISTRY``);
    register each guard once per registry. In multiprocess mode the process metrics come
    from `multiprocess_dir` (merged over processes) instead of this process's memory.
    """
    registry = registry if registry is not None else CollectorRegistry()
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for metric in PROCESS_METRICS:
            try:
                registry.register(metric)
            except ValueError:  # already there (e.g. a second guard on REGISTRY)
                pass
    registry.register(GuardCollector(guard))
    if guard not in _LISTENING:
        guard.add_listener(note_state_change)
        _LISTENING.add(guard)
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The exposition text of ``registry`` and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def flask_metrics_view(
    guard: MaintenanceGuard, registry: CollectorRegistry | None = None
) -> Callable[[], Any]:
    """A Flask view answering the Prometheus scrape for ``guard``."""
    from flask import Response

    registry = registry if registry is not None else instrument(guard)

    def metrics() -> Response:
        body, content_type = render(registry)
        return Response(body, content_type=content_type)

    return metrics


def metrics_blueprint(
    guard: MaintenanceGuard, path: str = "/metrics", registry: CollectorRegistry | None = None
) -> Blueprint:
    """A blueprint named ``maintenance_guard_metrics`` serving the scrape at ``path``."""
    from flask import Blueprint

    if not path.startswith("/"):
        raise InvalidInput(f"metrics path must start with '/', not {path!r}")
    blueprint = Blueprint("maintenance_guard_metrics", __name__)
    blueprint.add_url_rule(path, "metrics", flask_metrics_view(guard, registry))
    return blueprint


def mount_metrics(app: Flask, guard: MaintenanceGuard, path: str = "/metrics") -> str:
    """Serve the scrape at ``path`` on ``app``; returns the endpoint name to exempt."""
    blueprint = metrics_blueprint(guard, path)
    app.register_blueprint(blueprint)
    return f"{blueprint.name}.metrics"
