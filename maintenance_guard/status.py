"""`MaintenanceStatus`: the shared maintenance state as a value, and its JSON shape (no I/O)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from .modes import EMERGENCY_MESSAGE, GENERAL_MESSAGE, MaintenanceMode
from .pauses import QueuePause, pauses_in_effect
from .windows import MaintenanceWindow, ProgressUpdate, upcoming

TEST_MESSAGE = "Maintenance test mode: nothing is blocked; would-be refusals are recorded."


def iso_utc(epoch: float | None) -> str | None:
    """Format epoch seconds as ``2025-01-15T10:00:00Z`` (None stays None)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class MaintenanceStatus:
    """One snapshot of the fleet-wide maintenance state.

    ``mode`` is None when maintenance is off. Times are epoch seconds; `to_dict` gives
    the contract JSON. ``version`` increases on every change.
    """

    mode: MaintenanceMode | None = None
    reason: str = ""
    started_at: float | None = None
    estimated_duration: int | None = None
    enabled_by: str | None = None
    auto_end: bool = False
    blocked_operations: tuple[str, ...] = ()
    version: int = 0
    active_jobs_count: int = 0
    changed_at: float | None = None
    # Random id of this state's history: a Redis that restarts empty starts a new one, so
    # version numbers that begin again at 1 are never mistaken for old ones.
    generation: str = ""
    # Set while an emergency run (`guard.emergency`) owns this emergency state.
    emergency_id: str = ""
    # Set by `drain` (normal mode): blocked messages published before maintenance began
    # are held back too, so nothing blocked can start once the drain reports success.
    hold_queued: bool = False
    # Queues the workers stop consuming (`MaintenanceGuard.pause_queues`); independent of
    # the mode: enable and disable keep them. Entries past their end may linger until
    # one process removes them; `pauses(now)` leaves them out.
    paused_queues: tuple[QueuePause, ...] = ()
    # Scheduled maintenance windows (kept by every other change, like the pauses) and
    # the progress updates of the maintenance under way (cleared when it ends).
    windows: tuple[MaintenanceWindow, ...] = ()
    updates: tuple[ProgressUpdate, ...] = ()
    # When this maintenance window opened (Redis' clock): maintenance switching on stamps
    # it, updates and mode changes keep it (``started_at`` restarts at each of them).
    opened_at: float | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_active(self) -> bool:
        """True while any maintenance mode (test included) is on."""
        return self.mode is not None

    @property
    def estimated_completion(self) -> float | None:
        """Epoch seconds of the announced end, if a duration was given."""
        if self.started_at is None or self.estimated_duration is None:
            return None
        return self.started_at + self.estimated_duration

    def overrunning(self, now: float) -> bool:
        """True when the announced end has passed and maintenance is still on."""
        end = self.estimated_completion
        return self.is_active and end is not None and now > end

    def expired(self, now: float) -> bool:
        """True when ``auto_end`` is set and the end time has passed."""
        end = self.estimated_completion
        return self.is_active and self.auto_end and end is not None and now >= end

    def retry_after(self, now: float, default: int = 300) -> int:
        """Seconds a refused client should wait: to the announced end, at least 1."""
        end = self.estimated_completion
        if end is None:
            return default
        return max(1, math.ceil(end - now))

    @property
    def message(self) -> str:
        """The general user-facing message for this mode."""
        if self.mode is MaintenanceMode.EMERGENCY:
            return EMERGENCY_MESSAGE
        if self.mode is MaintenanceMode.TEST:
            return TEST_MESSAGE
        if self.mode is MaintenanceMode.NORMAL:
            return GENERAL_MESSAGE
        return ""

    def pauses(self, now: float) -> tuple[QueuePause, ...]:
        """The queue pauses in effect at ``now``."""
        return pauses_in_effect(self.paused_queues, now)

    def worth_restoring(self, now: float) -> bool:
        """True if a store that lost this state must get it back: maintenance is on, a
        queue is paused, or a window is scheduled."""
        return self.is_active or bool(self.pauses(now)) or bool(self.windows)

    def with_jobs(self, active_jobs_count: int) -> MaintenanceStatus:
        """A copy carrying a fresh in-flight job count."""
        return replace(self, active_jobs_count=active_jobs_count)

    def to_dict(self, now: float | None = None, *, include_admin: bool = False) -> dict[str, Any]:
        """The contract JSON shape; ``include_admin`` adds who enabled it and the version."""
        import time

        now = time.time() if now is None else now
        data: dict[str, Any] = {
            "is_active": self.is_active,
            "mode": self.mode.value if self.mode else None,
            "reason": self.reason if self.is_active else None,
            "estimated_duration": self.estimated_duration if self.is_active else None,
            "started_at": iso_utc(self.started_at) if self.is_active else None,
            "estimated_completion": iso_utc(self.estimated_completion) if self.is_active else None,
            "blocked_operations": list(self.blocked_operations) if self.is_active else [],
            "message": self.message,
            "active_jobs_count": self.active_jobs_count,
            "overrunning": self.overrunning(now),
            "auto_end": self.auto_end if self.is_active else False,
            "retry_after": self.retry_after(now) if self.is_active else None,
            "paused_queues": [pause_dict(p, include_admin=include_admin) for p in self.pauses(now)],
            "upcoming": None,
            "updates": [u.to_dict(include_admin=include_admin) for u in self.updates]
            if self.is_active
            else [],
        }
        next_window = upcoming(self.windows, now)
        if next_window is not None:
            data["upcoming"] = next_window.to_dict(include_admin=include_admin)
        if include_admin:
            data["enabled_by"] = self.enabled_by
            data["version"] = self.version
            data["emergency_id"] = self.emergency_id or None
            data["hold_queued"] = self.hold_queued
            data["windows"] = [
                w.to_dict(include_admin=True) for w in sorted(self.windows, key=_start)
            ]
        return data

    # --- storage encoding (flat string fields of the Redis hash) ---

    def to_fields(self) -> dict[str, str]:
        """Encode as flat string fields (the store's hash); ``version`` and ``generation``
        are the store's."""
        return {
            "mode": self.mode.value if self.mode else "",
            "reason": self.reason,
            "started_at": "" if self.started_at is None else repr(self.started_at),
            "estimated_duration": ""
            if self.estimated_duration is None
            else str(self.estimated_duration),
            "enabled_by": self.enabled_by or "",
            "auto_end": "1" if self.auto_end else "0",
            "blocked_operations": json.dumps(list(self.blocked_operations)),
            "changed_at": "" if self.changed_at is None else repr(self.changed_at),
            "emergency_id": self.emergency_id,
            "hold_queued": "1" if self.hold_queued else "0",
            "paused_queues": json.dumps([p.to_fields() for p in self.paused_queues]),
            "windows": json.dumps([w.to_fields() for w in self.windows]),
            "updates": json.dumps([u.to_fields() for u in self.updates]),
            "opened_at": "" if self.opened_at is None else repr(self.opened_at),
        }

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> MaintenanceStatus:
        """Decode the store's hash fields; unknown fields are kept in ``extra``."""
        mode_value = fields.get("mode", "")
        return cls(
            mode=MaintenanceMode(mode_value) if mode_value else None,
            reason=fields.get("reason", ""),
            started_at=_float_or_none(fields.get("started_at")),
            estimated_duration=_int_or_none(fields.get("estimated_duration")),
            enabled_by=fields.get("enabled_by") or None,
            auto_end=fields.get("auto_end") == "1",
            blocked_operations=tuple(_json_list(fields.get("blocked_operations"))),
            version=int(fields.get("version") or 0),
            changed_at=_float_or_none(fields.get("changed_at")),
            generation=fields.get("generation", ""),
            emergency_id=fields.get("emergency_id", ""),
            hold_queued=fields.get("hold_queued") == "1",
            paused_queues=tuple(
                QueuePause.from_fields(p) for p in _json_list(fields.get("paused_queues"))
            ),
            windows=tuple(
                MaintenanceWindow.from_fields(w) for w in _json_list(fields.get("windows"))
            ),
            updates=tuple(
                ProgressUpdate.from_fields(u) for u in _json_list(fields.get("updates"))
            ),
            opened_at=_float_or_none(fields.get("opened_at")),
            extra={k: v for k, v in fields.items() if k not in _KNOWN_FIELDS},
        )


_KNOWN_FIELDS = frozenset(
    (
        "mode",
        "reason",
        "started_at",
        "estimated_duration",
        "enabled_by",
        "auto_end",
        "blocked_operations",
        "version",
        "changed_at",
        "generation",
        "emergency_id",
        "hold_queued",
        "paused_queues",
        "windows",
        "updates",
        "opened_at",
    )
)


def _json_list(text: str | None) -> list[Any]:
    """A JSON array field; most states hold none, so the empty ones skip the decoder."""
    if not text or text == "[]":
        return []
    value = json.loads(text)
    if not isinstance(value, list):
        raise ValueError(f"expected a JSON array, got {text[:40]!r}")
    return value


INACTIVE = MaintenanceStatus()


def pause_dict(pause: QueuePause, *, include_admin: bool = False) -> dict[str, Any]:
    """A queue pause's JSON: queue, until (ISO or None), beat; admins also see the
    reason, who paused it, since when and which workers (None: all)."""
    data: dict[str, Any] = {
        "queue": pause.queue,
        "until": iso_utc(pause.ends_at),
        "beat": pause.beat,
    }
    if include_admin:
        data.update(
            reason=pause.reason,
            by=pause.by,
            paused_at=iso_utc(pause.paused_at),
            workers=list(pause.workers) or None,
        )
    return data


def _start(window: MaintenanceWindow) -> float:
    return window.start_at


def _float_or_none(value: str | None) -> float | None:
    return float(value) if value else None


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value else None
