"""Scheduled maintenance windows and progress updates, as values (no I/O, no Celery).

A window is part of the shared state (``MaintenanceStatus.windows``): every process knows
the next one from memory, so the publish path can refuse work that would still run when
it opens, and one process (compare-and-set, Redis' clock) announces it at its notice time
and starts it at its start time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from .errors import InvalidInput

MAX_WINDOWS = 50
MAX_UPDATES = 100
MAX_AHEAD_SECONDS = 366 * 86400


def parse_when(value: object, *, what: str = "time") -> float:
    """An ISO 8601 time with a zone (``2026-12-05T02:00Z``, ``...+01:00``) as epoch
    seconds; a time without a zone is refused (whose midnight would it be?)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInput(
                f"{what} {value!r} is not an ISO 8601 time such as 2026-12-05T02:00Z"
            ) from None
    else:
        raise InvalidInput(
            f"{what} must be an ISO 8601 time with a zone, not {type(value).__name__}"
        )
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput(
            f"{what} {value!s} has no time zone: add one, e.g. 2026-12-05T02:00Z or +01:00"
        )
    return moment.timestamp()


def iso_z(epoch: float) -> str:
    """Epoch seconds as ``2026-12-05T02:00:00Z``."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class MaintenanceWindow:
    """One scheduled maintenance: it starts by itself at ``start_at`` in ``mode`` for
    ``duration`` seconds (ending by itself with ``auto_end``), is announced ``notice``
    seconds before, and stops new blocked work ``drain_before`` seconds before.
    ``blocked_operations`` is what it will block (resolved when scheduled)."""

    id: str
    start_at: float
    duration: int
    mode: str
    reason: str
    by: str
    notice: int = 0
    auto_end: bool = False
    operations: tuple[str, ...] = ()  # as asked (empty: the mode's default)
    blocked_operations: tuple[str, ...] = ()
    drain_before: int = 0
    announced: bool = False
    # Work was deferred until after this window: parked work waits for its end.
    holds_deferred: bool = False

    @property
    def end_at(self) -> float:
        return self.start_at + self.duration

    @property
    def announce_at(self) -> float:
        return self.start_at - self.notice

    def overlaps(self, other: MaintenanceWindow) -> bool:
        return self.start_at < other.end_at and other.start_at < self.end_at

    def is_announced(self, now: float) -> bool:
        """True from the notice time on (whether or not the announcement is written yet);
        a window without a notice is announced from the moment it is scheduled."""
        return self.announced or not self.notice or now >= self.announce_at

    def refuses(self, operation: str | None, runtime: float | None, now: float) -> bool:
        """True if a job of ``operation`` submitted at ``now``, expected to run
        ``runtime`` seconds, must not start before this window: it would still run when
        the window opens, or the window's drain period has begun."""
        if operation is None or operation not in self.blocked_operations or now >= self.start_at:
            return False
        if self.drain_before and now >= self.start_at - self.drain_before:
            return True
        return runtime is not None and now + runtime > self.start_at

    def to_fields(self) -> dict[str, Any]:
        """Stored form (JSON-ready)."""
        return {
            "id": self.id,
            "start_at": self.start_at,
            "duration": self.duration,
            "mode": self.mode,
            "reason": self.reason,
            "by": self.by,
            "notice": self.notice,
            "auto_end": self.auto_end,
            "operations": list(self.operations),
            "blocked_operations": list(self.blocked_operations),
            "drain_before": self.drain_before,
            "announced": self.announced,
            "holds_deferred": self.holds_deferred,
        }

    @classmethod
    def from_fields(cls, data: Mapping[str, Any]) -> MaintenanceWindow:
        """Decode the stored form."""
        return cls(
            id=str(data["id"]),
            start_at=float(data["start_at"]),
            duration=int(data["duration"]),
            mode=str(data.get("mode", "normal")),
            reason=str(data.get("reason", "")),
            by=str(data.get("by", "")),
            notice=int(data.get("notice") or 0),
            auto_end=bool(data.get("auto_end", False)),
            operations=tuple(data.get("operations") or ()),
            blocked_operations=tuple(data.get("blocked_operations") or ()),
            drain_before=int(data.get("drain_before") or 0),
            announced=bool(data.get("announced", False)),
            holds_deferred=bool(data.get("holds_deferred", False)),
        )

    def to_dict(self, *, include_admin: bool = False) -> dict[str, Any]:
        """JSON form: id, start, expected end, mode, reason, blocked operations; admins
        also see who scheduled it and its notice, drain and auto-end settings."""
        data: dict[str, Any] = {
            "id": self.id,
            "start": iso_z(self.start_at),
            "expected_end": iso_z(self.end_at),
            "mode": self.mode,
            "reason": self.reason,
            "blocked_operations": list(self.blocked_operations),
        }
        if include_admin:
            data.update(
                by=self.by,
                announce_at=iso_z(self.announce_at) if self.notice else None,
                notice=self.notice,
                auto_end=self.auto_end,
                drain_before=self.drain_before,
                duration=self.duration,
            )
        return data


@dataclass(frozen=True)
class ProgressUpdate:
    """One timestamped progress note of the maintenance under way."""

    at: float
    text: str
    by: str

    def to_fields(self) -> dict[str, Any]:
        return {"at": self.at, "text": self.text, "by": self.by}

    @classmethod
    def from_fields(cls, data: Mapping[str, Any]) -> ProgressUpdate:
        return cls(float(data["at"]), str(data.get("text", "")), str(data.get("by", "")))

    def to_dict(self, *, include_admin: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {"at": iso_z(self.at), "text": self.text}
        if include_admin:
            data["by"] = self.by
        return data


def upcoming(windows: Iterable[MaintenanceWindow], now: float) -> MaintenanceWindow | None:
    """The next window that has been announced and has not started, if any."""
    pending = sorted(
        (w for w in windows if w.is_announced(now) and now < w.start_at), key=lambda w: w.start_at
    )
    return pending[0] if pending else None


def refusing_window(
    windows: Iterable[MaintenanceWindow], operation: str | None, runtime: float | None, now: float
) -> MaintenanceWindow | None:
    """The first window that refuses this job now (see `MaintenanceWindow.refuses`)."""
    for window in sorted(windows, key=lambda w: w.start_at):
        if window.refuses(operation, runtime, now):
            return window
    return None


def next_window_event(windows: Iterable[MaintenanceWindow]) -> float | None:
    """When the watcher next has something to do: announce a window or start one."""
    times = [w.start_at for w in windows] + [
        w.announce_at for w in windows if w.notice and not w.announced
    ]
    return min(times, default=None)


def describe_wait(window: MaintenanceWindow, runtime: float | None, now: float) -> str:
    """Why a job is refused before ``window``, and when it can run."""
    opens = iso_z(window.start_at)
    after = iso_z(window.end_at)
    if (
        runtime is not None
        and now + runtime > window.start_at
        and not (window.drain_before and now >= window.start_at - window.drain_before)
    ):
        minutes = max(1, math.ceil(runtime / 60))
        return (
            f"it takes about {minutes} min and maintenance starts at {opens}; "
            f"submit it after {after}"
        )
    return (
        f"maintenance starts at {opens} and new work of this kind has stopped; "
        f"submit it after {after}"
    )


def with_holding(
    windows: Iterable[MaintenanceWindow], window_id: str
) -> tuple[MaintenanceWindow, ...]:
    """The windows, with ``window_id`` marked as holding deferred work."""
    return tuple(replace(w, holds_deferred=True) if w.id == window_id else w for w in windows)
