"""`Snapshot`: what the hot path reads, one immutable object swapped in whole (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .modes import MaintenanceMode, OperationCatalog, blocked_operations_for
from .settings import GuardSettings
from .status import INACTIVE, MaintenanceStatus
from .store import StateStamp
from .tally import window_of
from .windows import next_window_event

UNKNOWN_STATE_REASON = "maintenance state unknown: the state store cannot be reached"


@dataclass(frozen=True)
class Snapshot:
    """The state this process enforces, with its blocked sets worked out in advance."""

    status: MaintenanceStatus
    blocked: frozenset[str]
    normal_blocked: frozenset[str]
    end_at: float | None  # auto-end time, if any
    known: bool
    pause_end_at: float | None = None  # the earliest end of a queue pause, if any
    window_event_at: float | None = None  # when a scheduled window is next announced or starts
    window: str | None = None  # the id of the maintenance window under way (tally.py)

    @property
    def mode(self) -> MaintenanceMode | None:
        return self.status.mode

    @property
    def stamp(self) -> StateStamp:
        return StateStamp(self.status.generation, self.status.version)


def build_snapshot(
    status: MaintenanceStatus,
    catalog: OperationCatalog,
    settings: GuardSettings,
    *,
    known: bool = True,
) -> Snapshot:
    """The snapshot of ``status``: what its mode blocks (normal mode: the operations the
    state names, else the configured ones, else every high-risk one)."""
    named = tuple(op for op in status.blocked_operations if op in catalog)
    if named:
        normal_blocked = frozenset(named)
    elif settings.blocked_operations is not None:
        normal_blocked = frozenset(settings.blocked_operations)
    else:
        normal_blocked = frozenset(catalog.high_risk())
    if status.mode is MaintenanceMode.NORMAL:
        blocked = normal_blocked
    else:
        blocked = blocked_operations_for(status.mode, catalog)
    ordered = tuple(op for op in catalog.names() if op in blocked)
    if ordered != status.blocked_operations:
        status = replace(status, blocked_operations=ordered)
    end_at = status.estimated_completion if status.auto_end else None
    ends = [p.ends_at for p in status.paused_queues if p.ends_at is not None]
    return Snapshot(
        status,
        blocked,
        normal_blocked,
        end_at,
        known,
        min(ends, default=None),
        next_window_event(status.windows),
        window_of(status),
    )


def unknown_snapshot(catalog: OperationCatalog, settings: GuardSettings) -> Snapshot:
    """What a process enforces before it has read the state (``on_store_error``)."""
    if settings.on_store_error == "closed":
        status = MaintenanceStatus(mode=MaintenanceMode.NORMAL, reason=UNKNOWN_STATE_REASON)
        return build_snapshot(status, catalog, settings, known=False)
    return build_snapshot(INACTIVE, catalog, settings, known=False)
