"""Per-window impact tallies: what a process buffers for one maintenance window (no I/O).

A window is one maintenance period: from maintenance switching on (any mode) until it
switches off or ends by itself; updates and mode changes in between keep it. Its id is
the time it opened on Redis' clock (``opened_at`` of the state, six decimals), the same
in every process. Tallies are counters like the attempt counters (``kind:surface:operation``
fields), plus refusals per minute, the names of the users refused and the window's
description; the store adds them up per window.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .status import MaintenanceStatus

# Per-window data is kept this long after its last write (the window's end, or a late
# flush of a process that refused something just before the end).
IMPACT_RETENTION = 30 * 86_400
# Distinct user names one process buffers per window between two flushes; names past
# this are counted as refusals without a user (bounds memory while Redis is away).
MAX_BUFFERED_USERS = 50_000
# Kinds of tally field besides the attempt-counter kinds (`events.counter_field`).
UNNAMED = "unnamed"  # a refusal no user name came with (Celery, an app without a loader)
FINISHED = "finished"  # a job that finished while the window was open


def window_of(status: MaintenanceStatus) -> str | None:
    """The window id of ``status``; None when maintenance is off. A state written before
    windows had their own start time falls back to ``started_at``."""
    if status.mode is None:
        return None
    opened = status.opened_at if status.opened_at is not None else status.started_at
    return None if opened is None else f"{opened:.6f}"


def window_meta(status: MaintenanceStatus) -> dict[str, str]:
    """The description stored beside a window's counts: start, mode seen, reason."""
    out = {"reason": status.reason[:500]}
    if status.mode is not None:
        out[f"mode:{status.mode.value}"] = "1"
    opened = status.opened_at if status.opened_at is not None else status.started_at
    if opened is not None:
        out["opened_at"] = repr(opened)
    return out


def minute_of(epoch: float) -> int:
    """The minute bucket of ``epoch`` (minutes since the epoch)."""
    return int(epoch // 60)


@dataclass
class WindowTally:
    """One window's buffered additions. Not thread-safe: the recorder's lock guards it.

    A tally of description only waits for counts to travel with, unless ``eager`` (the
    process that opened or closed the window could not write it at once: it retries).
    """

    counts: Counter[str] = field(default_factory=Counter)
    minutes: Counter[int] = field(default_factory=Counter)
    users: set[str] = field(default_factory=set)
    meta: dict[str, str] = field(default_factory=dict)
    eager: bool = False

    @property
    def has_data(self) -> bool:
        """True when it holds counts (not only a description)."""
        return bool(self.counts or self.minutes or self.users)

    def refused(self, field_name: str, user: str | None, minute: int | None) -> None:
        """Count one refusal (or would-be refusal) under ``field_name``."""
        self.counts[field_name] += 1
        if minute is not None:
            self.minutes[minute] += 1
        if not user:
            self.counts[f"{UNNAMED}:{field_name.split(':', 1)[1]}"] += 1
        elif user in self.users or len(self.users) < MAX_BUFFERED_USERS:
            self.users.add(user)
        else:
            self.counts[f"{UNNAMED}:{field_name.split(':', 1)[1]}"] += 1

    def merge(self, other: WindowTally) -> None:
        """Add ``other`` into this one (a batch that could not be written goes back)."""
        self.counts.update(other.counts)
        self.minutes.update(other.minutes)
        room = max(0, MAX_BUFFERED_USERS - len(self.users))
        self.users.update(list(other.users - self.users)[:room])
        self.meta = {**other.meta, **self.meta}  # this one is the newer
        self.eager = self.eager or other.eager


@dataclass(frozen=True)
class StoredWindow:
    """One window as the store holds it: summed counts, refusals per minute, the
    estimated number of distinct users refused, and the description."""

    window: str
    counts: dict[str, int]
    minutes: dict[int, int]
    distinct_users: int
    meta: dict[str, str]
