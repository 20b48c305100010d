"""Queue pauses: which Celery queues the fleet's workers stop consuming, for how long
(no I/O, no Celery; the requests that change them are in changes.py).

A pause is part of the shared state (one entry per queue in the state hash), so it
reaches every worker with the state, survives a worker restart, and a Redis that lost
the state gets it back with the rest. An entry with an end stops counting at that end
on every process (by Redis' clock), whether or not a process has written its removal
yet; one process then removes it (compare-and-set) and logs ``pause_ended``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInput

MAX_QUEUES = 100
# Celery/kombu queue names and worker hostnames: printable, no spaces or wildcards.
_NAME = re.compile(r"^[A-Za-z0-9_.:@\-]{1,200}$")


@dataclass(frozen=True)
class QueuePause:
    """One paused queue: ``workers`` empty means every worker of this app."""

    queue: str
    reason: str
    by: str
    paused_at: float
    ends_at: float | None = None
    workers: tuple[str, ...] = ()
    beat: bool = False

    def in_effect(self, now: float) -> bool:
        """True until its end (if it has one)."""
        return self.ends_at is None or now < self.ends_at

    def applies_to(self, hostname: str) -> bool:
        """True if the worker ``hostname`` must not consume this queue."""
        return not self.workers or hostname in self.workers

    def to_fields(self) -> dict[str, Any]:
        """Stored form (JSON-ready)."""
        return {
            "queue": self.queue,
            "reason": self.reason,
            "by": self.by,
            "paused_at": self.paused_at,
            "ends_at": self.ends_at,
            "workers": list(self.workers),
            "beat": self.beat,
        }

    @classmethod
    def from_fields(cls, data: Mapping[str, Any]) -> QueuePause:
        """Decode the stored form."""
        ends = data.get("ends_at")
        return cls(
            queue=str(data["queue"]),
            reason=str(data.get("reason", "")),
            by=str(data.get("by", "")),
            paused_at=float(data.get("paused_at") or 0.0),
            ends_at=None if ends is None else float(ends),
            workers=tuple(str(w) for w in data.get("workers") or ()),
            beat=bool(data.get("beat", False)),
        )


def pauses_in_effect(pauses: Iterable[QueuePause], now: float) -> tuple[QueuePause, ...]:
    """The pauses that have not ended at ``now``."""
    return tuple(p for p in pauses if p.in_effect(now))


def paused_queue_names(pauses: Iterable[QueuePause], hostname: str, now: float) -> set[str]:
    """Names of the queues the worker ``hostname`` must not consume at ``now``."""
    return {p.queue for p in pauses if p.in_effect(now) and p.applies_to(hostname)}


def clean_names(values: object, *, what: str) -> tuple[str, ...]:
    """Queue or worker names: a list of non-empty names without spaces, deduplicated."""
    if values is None:
        return ()
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise InvalidInput(f"{what} must be a list of names")
    names: list[str] = []
    for value in values:
        if not isinstance(value, str) or not _NAME.match(value):
            raise InvalidInput(
                f"invalid {what[:-1]} name {value!r}: letters, digits and _ . : @ - only"
            )
        if value not in names:
            names.append(value)
    if len(names) > MAX_QUEUES:
        raise InvalidInput(f"at most {MAX_QUEUES} {what} at once")
    return tuple(names)


@dataclass(frozen=True)
class PauseResult:
    """What `MaintenanceGuard.pause_queues` did: the pauses now in effect, the named
    queues no registered worker (of the named ones) consumes, and the named workers
    that are not registered (both None when that cannot be told: no worker registry on
    this store)."""

    pauses: tuple[QueuePause, ...]
    unknown_queues: tuple[str, ...] | None = None
    unknown_workers: tuple[str, ...] | None = None

    @property
    def warnings(self) -> list[str]:
        """Human-readable warnings (an unknown queue name is one, not an error)."""
        out = []
        if self.unknown_queues:
            names = ", ".join(self.unknown_queues)
            out.append(
                f"no running worker of this app consumes {names}: paused anyway; a worker "
                "that starts with it will not consume it (check the name)"
            )
        if self.unknown_workers:
            out.append(f"no running worker of this app is named {', '.join(self.unknown_workers)}")
        return out
