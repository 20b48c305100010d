"""`WindowImpact`: what one maintenance window did to users, read from the store.

Per window, never summed across windows (a window is one maintenance period, see
`maintenance_guard.tally`): refused attempts per operation and surface, the distinct users
refused, refusals per minute, the jobs that finished while it was open and, where the
host app knows them, its sessions by admin and non-admin. On Redis the distinct users
are a HyperLogLog estimate (standard error about 0.81%); refusals that came with no user
name (Celery publishes and workers know none; a Flask app without a user-name loader
neither) are counted apart. In a test-mode window nothing is refused: the counts are what
normal and emergency mode would have refused, the users and minutes those of normal mode.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInput
from .sessions import SessionCount
from .status import MaintenanceStatus, iso_utc
from .store import StateStore
from .tally import FINISHED, UNNAMED, StoredWindow, minute_of, window_of

CHART_POINTS = 120  # at most this many bars: a long window sums several minutes per point
_BARS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class WindowImpact:
    """The user impact of one maintenance window. Times are epoch seconds."""

    window: str
    opened_at: float | None
    ended_at: float | None
    active: bool
    modes: tuple[str, ...]
    reason: str
    refused: dict[str, dict[str, int]]  # operation -> surface -> refused attempts
    would_refuse: dict[str, dict[str, dict[str, int]]]  # test mode: "normal"/"emergency" -> ...
    distinct_users: int
    refused_without_user: int
    per_minute: dict[int, int]  # minute (epoch // 60) -> refusals
    jobs_finished: dict[str, int]  # operation ("-": unclassified) -> jobs
    chart_end: float  # the window's end, or the time of the read while it is open
    sessions: SessionCount | None = None  # None: unknown (no Flask-Session on Redis)

    @classmethod
    def from_stored(cls, stored: StoredWindow, *, current: str | None, now: float) -> WindowImpact:
        """Build from the store's sums; ``current`` is the window under way (if any)."""
        nested: dict[str, dict[str, dict[str, int]]] = {}
        unnamed = 0
        finished: dict[str, int] = {}
        for name, n in stored.counts.items():
            kind, _, rest = name.partition(":")
            surface, _, operation = rest.partition(":")
            if kind == UNNAMED:
                unnamed += n
            elif kind == FINISHED:
                finished[operation] = finished.get(operation, 0) + n
            elif surface and operation:
                nested.setdefault(kind, {}).setdefault(operation, {})[surface] = n
        meta = stored.meta
        active = stored.window == current
        opened = _float(meta.get("opened_at")) or _float(stored.window)
        ended = None if active else _float(meta.get("ended_at"))
        last_minute = max(stored.minutes, default=None)
        end = now if active else ended or (last_minute * 60 + 59 if last_minute else opened)
        return cls(
            window=stored.window,
            opened_at=opened,
            ended_at=ended,
            active=active,
            modes=tuple(sorted(k[5:] for k in meta if k.startswith("mode:"))),
            reason=meta.get("reason", ""),
            refused=nested.get("blocked", {}),
            would_refuse={
                mode: nested[f"would_block_{mode}"]
                for mode in ("normal", "emergency")
                if f"would_block_{mode}" in nested
            },
            distinct_users=stored.distinct_users,
            refused_without_user=unnamed,
            per_minute=dict(stored.minutes),
            jobs_finished=finished,
            chart_end=max(end or 0.0, opened or 0.0),
        )

    @classmethod
    def opening(cls, status: MaintenanceStatus, now: float) -> WindowImpact:
        """The impact of the window ``status`` is in, before anything was recorded."""
        window = window_of(status) or ""
        return cls(
            window=window,
            opened_at=_float(window),
            ended_at=None,
            active=True,
            modes=(status.mode.value,) if status.mode else (),
            reason=status.reason,
            refused={},
            would_refuse={},
            distinct_users=0,
            refused_without_user=0,
            per_minute={},
            jobs_finished={},
            chart_end=now,
        )

    @property
    def refused_total(self) -> int:
        """Refused attempts in the window, every operation and surface."""
        return sum(n for surfaces in self.refused.values() for n in surfaces.values())

    @property
    def jobs_finished_total(self) -> int:
        """Jobs that finished while the window was open."""
        return sum(self.jobs_finished.values())

    def chart(self, points: int = CHART_POINTS) -> tuple[float | None, int, list[int]]:
        """Refusals over the window for a chart: (start of the first point, minutes per
        point, counts), from the window's opening minute to its end (or now)."""
        if self.opened_at is None and not self.per_minute:
            return None, 1, []
        first = minute_of(self.opened_at) if self.opened_at is not None else min(self.per_minute)
        first = min([first, *self.per_minute])
        last = max([minute_of(self.chart_end), first, *self.per_minute])
        step, counts = attempt_series(self.per_minute, first, last, points)
        return first * 60.0, step, counts

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the admin overview's ``impact``, ``report --json``'s ``impact``)."""
        start, step, counts = self.chart()
        return {
            "window": self.window,
            "active": self.active,
            "opened_at": iso_utc(self.opened_at),
            "ended_at": iso_utc(self.ended_at),
            "modes": list(self.modes),
            "reason": self.reason,
            "refused": self.refused,
            "refused_total": self.refused_total,
            "would_refuse": self.would_refuse,
            "distinct_users": self.distinct_users,
            "distinct_users_approximate": True,
            "refused_without_user": self.refused_without_user,
            "attempts_per_minute": {
                "start": iso_utc(start),
                "step_minutes": step,
                "counts": counts,
            },
            "jobs_finished": self.jobs_finished_total,
            "jobs_finished_by_operation": dict(sorted(self.jobs_finished.items())),
            "sessions": None if self.sessions is None else self.sessions.to_dict(),
        }

    def to_text(self) -> str:
        """Readable text (``maintenance-guard report``)."""
        state = "still open" if self.active else f"ended {_clock(self.ended_at)}"
        modes = "/".join(self.modes) or "?"
        lines = [
            f"Impact of the last maintenance window ({modes}), opened {_clock(self.opened_at)}, "
            f"{state}" + (f": {self.reason}" if self.reason else ""),
            f"  Refused attempts: {self.refused_total}" + _by_operation(self.refused),
        ]
        for mode, would in self.would_refuse.items():
            total = sum(n for s in would.values() for n in s.values())
            lines.append(f"  {mode.capitalize()} mode would refuse: {total}" + _by_operation(would))
        lines.append(
            f"  Distinct users refused: about {self.distinct_users};"
            f" refusals with no user name: {self.refused_without_user}"
        )
        _, step, counts = self.chart(60)
        if counts:
            bars = "".join(_bar(n, max(counts)) for n in counts)
            lines.append(f"  Refusals per {_minutes(step)} (peak {max(counts)}): {bars}")
        lines.append(f"  Jobs finished since it opened: {self.jobs_finished_total}")
        if self.sessions is None:
            lines.append("  Active sessions: unknown")
        else:
            s = self.sessions
            more = " (at least: the count stopped at its limit)" if s.truncated else ""
            lines.append(f"  Active sessions: {s.admin} admin, {s.non_admin} non-admin{more}")
        return "\n".join(lines)


def read_impact(
    store: StateStore,
    window: str | None = None,
    *,
    status: MaintenanceStatus | None = None,
    now: float | None = None,
) -> WindowImpact | None:
    """The impact of ``window`` (default: the window ``status`` is in, else the last one
    written); None when there is none. ``status`` defaults to the stored state, ``now``
    to the state's ``changed_at`` or this process's clock. Raises `StoreUnavailable`,
    and `InvalidInput` for a malformed window id."""
    if window is not None and _float(window) is None:
        raise InvalidInput(f"not a window id: {window[:40]!r}")
    if status is None:
        status = store.load_state() or MaintenanceStatus()
    if now is None:
        now = time.time()
    current = window_of(status)
    target = window or current
    stored = store.read_window(target)
    if stored is None:
        return WindowImpact.opening(status, now) if target and target == current else None
    return WindowImpact.from_stored(stored, current=current, now=now)


def attempt_series(
    minutes: Mapping[int, int], first: int, last: int, points: int = CHART_POINTS
) -> tuple[int, list[int]]:
    """Counts per minute from ``first`` to ``last`` (inclusive, zeros filled), summed
    ``step`` minutes per point so there are at most ``points``; returns (step, counts)."""
    span = max(1, last - first + 1)
    step = max(1, math.ceil(span / max(1, points)))
    counts = [0] * math.ceil(span / step)
    for minute, n in minutes.items():
        if first <= minute <= last:
            counts[(minute - first) // step] += n
    return step, counts


def sparkline_points(counts: Sequence[int], width: float = 240, height: float = 40) -> str:
    """An SVG ``polyline`` ``points`` value drawing ``counts`` in a width x height box
    (y grows downwards; a flat line at the bottom when every count is 0)."""
    if not counts:
        return ""
    values = list(counts) if len(counts) > 1 else [counts[0], counts[0]]
    peak = max(values) or 1
    step = width / (len(values) - 1)
    return " ".join(
        f"{round(i * step, 1):g},{round(height - n / peak * height, 1):g}"
        for i, n in enumerate(values)
    )


def _by_operation(counts: Mapping[str, Mapping[str, int]]) -> str:
    if not counts:
        return ""
    parts = [
        f"{op}: " + ", ".join(f"{surface}={n}" for surface, n in sorted(surfaces.items()))
        for op, surfaces in sorted(counts.items())
    ]
    return " (" + "; ".join(parts) + ")"


def _bar(n: int, peak: int) -> str:
    if not n:
        return " "
    return _BARS[min(len(_BARS) - 1, math.ceil(n / peak * len(_BARS)) - 1)]


def _minutes(step: int) -> str:
    return "minute" if step == 1 else f"{step} minutes"


def _clock(epoch: float | None) -> str:
    text = iso_utc(epoch)
    return text.replace("T", " ") if text else "at an unknown time"


def _float(value: str | None) -> float | None:
    try:
        number = float(value) if value else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None
