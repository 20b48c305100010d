"""Queue pauses, the service built on the guard: pause, resume, and which queues the
registered workers consume (`MaintenanceGuard.pause_queues` delegates here).

The pause itself is state (`MaintenanceStatus.paused_queues`), written with the same
compare-and-set as every change, so it reaches every process within milliseconds and a
worker that starts during it reads it before its first fetch; the workers apply it
themselves (`maintenance_guard.celery.emergency.ConsumerGate`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .changes import Pausing, Resuming
from .inflight import InflightRegistry
from .pauses import PauseResult
from .status import INACTIVE, MaintenanceStatus
from .store import RedisStore

if TYPE_CHECKING:
    from .guard import MaintenanceGuard


def pause_queues(
    guard: MaintenanceGuard,
    queues: Iterable[str],
    *,
    reason: str,
    by: str | None = None,
    duration: int | str | None = None,
    workers: Iterable[str] | None = None,
    beat: bool = False,
) -> PauseResult:
    """Pause ``queues`` (see `MaintenanceGuard.pause_queues`). Raises `InvalidInput`
    before changing anything, `StoreUnavailable` if Redis cannot be reached."""
    request = Pausing.parse(
        list(queues) if queues is not None else None,
        reason=reason,
        by=by,
        duration=duration,
        workers=list(workers) if workers is not None else None,
        beat=beat,
    )
    consumed = worker_queues(guard)
    unknown_queues: tuple[str, ...] | None = None
    unknown_workers: tuple[str, ...] | None = None
    if consumed is not None:
        scope = [w for w in consumed if not request.workers or w in request.workers]
        seen = {q for w in scope for q in consumed[w]["consuming"]}
        unknown_queues = tuple(q for q in request.queues if q not in seen)
        unknown_workers = tuple(w for w in request.workers if w not in consumed)

    def make_new(old: MaintenanceStatus | None) -> MaintenanceStatus:
        base = old or INACTIVE
        return replace(base, paused_queues=request.apply(base.paused_queues, guard.now()))

    guard.change_state(make_new, lambda old: request.event(unknown_queues or ()), keep_shared=False)
    return PauseResult(guard.current().pauses(guard.now()), unknown_queues, unknown_workers)


def resume_queues(
    guard: MaintenanceGuard,
    queues: Iterable[str] | None = None,
    *,
    everything: bool = False,
    by: str | None = None,
) -> tuple[str, ...]:
    """Resume ``queues`` (or every paused queue); returns the queues resumed (empty, and
    nothing written, when none of them was paused)."""
    request = Resuming.parse(
        list(queues) if queues is not None else None, everything=everything, by=by
    )
    resumed: list[str] = []

    def matching(old: MaintenanceStatus | None) -> list[str]:
        if old is None:
            return []
        current = old.pauses(guard.now())
        return [p.queue for p in current if not request.queues or p.queue in request.queues]

    def make_new(old: MaintenanceStatus | None) -> MaintenanceStatus:
        base = old or INACTIVE
        resumed[:] = matching(old)
        return replace(base, paused_queues=request.apply(base.paused_queues, guard.now()))

    guard.change_state(
        make_new,
        lambda old: request.event(resumed),
        skip_if=lambda old: not matching(old),
        keep_shared=False,
    )
    return tuple(resumed)


def worker_queues(guard: MaintenanceGuard) -> dict[str, dict[str, Any]] | None:
    """Registered worker -> ``{"consuming": [...], "paused": [...]}`` (the queues it
    was started with, and those it does not consume now); None when the store keeps no
    worker registry (a MemoryStore). Raises `StoreUnavailable`."""
    if not isinstance(guard.store, RedisStore):
        return None
    registry = InflightRegistry(guard.store, guard.settings.heartbeat_timeout, guard.now)
    out: dict[str, dict[str, Any]] = {}
    for hostname, info in registry.workers().items():
        out[hostname] = {
            "consuming": list(info.get("queues") or []),
            "paused": list(info.get("paused") or []),
        }
    return out
