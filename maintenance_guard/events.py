"""Blocked-attempt counting, test-mode records and audit-event logging.

The hot path only touches an in-memory counter under a lock; the guard's background
thread flushes the counters and records to the store in one pipelined call a second.
Refusals are also tallied per maintenance window (`tally.WindowTally`), in the same call.

Counter kinds (``kind:surface:operation`` fields of the attempts hash): ``blocked``
(refused by normal or emergency mode), and in test mode ``would_block`` (every recorded
attempt), ``would_block_normal`` and ``would_block_emergency`` (what each mode would
have refused); ``dropped:records:-`` counts test records lost to a full buffer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .tally import WindowTally

SURFACES = ("publish", "worker", "http", "login", "python")
TEST_KINDS = ("would_block", "would_block_normal", "would_block_emergency", "dropped")
DROPPED_FIELD = "dropped:records:-"
MAX_BUFFERED_WINDOWS = 8  # windows with a tally in one process's buffer at once

logger = logging.getLogger("maintenance_guard")


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt that test mode would have refused (or that a real mode refused)."""

    surface: str
    operation: str | None
    target: str | None
    user: str | None
    at: float
    would_block_normal: bool
    would_block_emergency: bool

    def to_fields(self) -> dict[str, str]:
        """Flat string fields (None fields left out); `from_fields` reads them back."""
        out = {
            "surface": self.surface,
            "at": repr(self.at),
            "would_block_normal": "1" if self.would_block_normal else "0",
            "would_block_emergency": "1" if self.would_block_emergency else "0",
        }
        if self.operation is not None:
            out["operation"] = self.operation
        if self.target is not None:
            out["target"] = self.target
        if self.user is not None:
            out["user"] = self.user
        return out

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> AttemptRecord:
        """Decode a stream entry written by `to_fields`."""
        return cls(
            surface=fields.get("surface", ""),
            operation=fields.get("operation"),
            target=fields.get("target"),
            user=fields.get("user"),
            at=float(fields.get("at") or 0),
            would_block_normal=fields.get("would_block_normal") == "1",
            would_block_emergency=fields.get("would_block_emergency") == "1",
        )


def counter_field(surface: str, operation: str | None, kind: str = "blocked") -> str:
    """The counter name: ``kind:surface:operation`` (operation ``-`` when unclassified)."""
    return f"{kind}:{surface}:{operation or '-'}"


_Pending = tuple[str, "str | None", "str | None", "str | None", float, bool, bool]


class AttemptRecorder:
    """Buffers counts and test-mode records until the next flush. Thread-safe.

    The hot path appends one tuple under a lock; counters and `AttemptRecord` objects
    are built in `take`, on the flushing thread.
    """

    MAX_BUFFERED_RECORDS = 50_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._pending: list[_Pending] = []
        self._returned: list[AttemptRecord] = []
        self._tallies: dict[str, WindowTally] = {}
        self.dropped_records = 0
        # Attempts counted or recorded by this process, and test records flushed: a
        # presence record carries both, so a report can tell a process that ended
        # without flushing (see `MaintenanceGuard.stop`).
        self.total = 0
        self.flushed = 0

    def count(
        self,
        surface: str,
        operation: str | None,
        kind: str = "blocked",
        *,
        window: str | None = None,
        user: str | None = None,
        minute: int | None = None,
    ) -> None:
        """Count one attempt (``kind`` is ``blocked`` or ``would_block``); with ``window``
        also tally it as a refusal of that window, by ``user`` in ``minute``."""
        field = counter_field(surface, operation, kind)
        with self._lock:
            self._counts[field] += 1
            self.total += 1
            if window is not None:
                self._tally(window).refused(field, user, minute)

    def count_in_window(self, window: str, field: str) -> None:
        """Add one to a window's tally field only (a job finished in it, say)."""
        with self._lock:
            self._tally(window).counts[field] += 1

    def note_window(self, window: str, meta: Mapping[str, str]) -> None:
        """Describe ``window`` (start, mode, reason, end) at the next flush that writes
        anything (see `take_tallies`)."""
        with self._lock:
            self._tally(window).meta.update(meta)

    def take_tallies(self, force: bool = False) -> dict[str, WindowTally]:
        """Remove and return the window tallies, if one holds counts or is eager (or
        ``force``); descriptions alone stay buffered."""
        with self._lock:
            tallies = self._tallies
            if not force and not any(t.has_data or t.eager for t in tallies.values()):
                return {}
            self._tallies = {}
        return tallies

    def put_back_tallies(self, tallies: Mapping[str, WindowTally], *, eager: bool) -> None:
        """Return window tallies that could not be written (merged with newer ones);
        ``eager``: the next flush writes them even with no counts to travel with."""
        with self._lock:
            for window, old in tallies.items():
                tally = self._tally(window)
                tally.merge(old)
                tally.eager = tally.eager or eager

    def _tally(self, window: str) -> WindowTally:
        tally = self._tallies.get(window)
        if tally is None:
            if len(self._tallies) >= MAX_BUFFERED_WINDOWS:
                idle = [w for w, t in self._tallies.items() if not t.has_data]
                for old in idle[: len(self._tallies) - MAX_BUFFERED_WINDOWS + 1]:
                    del self._tallies[old]
            tally = self._tallies[window] = WindowTally()
        return tally

    def note_flushed(self, records: int) -> None:
        """``records`` test records reached the store."""
        with self._lock:
            self.flushed += records

    def record(
        self,
        surface: str,
        operation: str | None,
        *,
        target: str | None,
        user: str | None,
        would_block_normal: bool,
        would_block_emergency: bool,
        window: str | None = None,
        minute: int | None = None,
    ) -> None:
        """Buffer a test-mode record; it is counted (per mode that would refuse it) at `take`.

        With ``window``, the window's tally counts it at once; its users and minutes are
        those of the attempts normal mode would have refused."""
        item = (
            surface,
            operation,
            target,
            user,
            time.time(),
            would_block_normal,
            would_block_emergency,
        )
        with self._lock:
            self.total += 1
            if window is not None:
                _tally_record(self._tally(window), item, minute)
            if len(self._pending) + len(self._returned) < self.MAX_BUFFERED_RECORDS:
                self._pending.append(item)
                return
            self.dropped_records += 1
            _count_record(self._counts, item)
            self._counts[DROPPED_FIELD] += 1

    def take(self) -> tuple[dict[str, int], list[AttemptRecord]]:
        """Remove and return everything buffered: counters and records."""
        with self._lock:
            counts, pending, returned = self._counts, self._pending, self._returned
            self._counts = Counter()
            self._pending = []
            self._returned = []
        records = returned + [AttemptRecord(*item) for item in pending]
        for item in pending:
            _count_record(counts, item)
        return dict(counts), records

    def put_back(self, counts: dict[str, int], records: list[AttemptRecord]) -> None:
        """Return a batch that could not be flushed, so it is tried again (already counted)."""
        with self._lock:
            self._counts.update(counts)
            room = self.MAX_BUFFERED_RECORDS - len(self._pending) - len(self._returned)
            self._returned[:0] = records[: max(0, room)]
            lost = max(0, len(records) - max(0, room))
            self.dropped_records += lost
            if lost:
                self._counts[DROPPED_FIELD] += lost


def _count_record(counts: Counter[str], item: _Pending) -> None:
    suffix = f":{item[0]}:{item[1] or '-'}"
    counts["would_block" + suffix] += 1
    if item[5]:
        counts["would_block_normal" + suffix] += 1
    if item[6]:
        counts["would_block_emergency" + suffix] += 1


def _tally_record(tally: WindowTally, item: _Pending, minute: int | None) -> None:
    suffix = f":{item[0]}:{item[1] or '-'}"
    tally.counts["would_block" + suffix] += 1
    if item[6]:
        tally.counts["would_block_emergency" + suffix] += 1
    if item[5]:
        tally.refused("would_block_normal" + suffix, item[3], minute)


def summarise_counts(raw: dict[str, int]) -> dict[str, Any]:
    """Nest ``kind:surface:operation`` counters as {kind: {operation: {surface: n}}}."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for field, n in raw.items():
        parts = field.split(":", 2)
        if len(parts) != 3:
            continue
        kind, surface, operation = parts
        out.setdefault(kind, {}).setdefault(operation, {})[surface] = n
    return out


def total_counts(raw: Mapping[str, int], kind: str) -> dict[str, int]:
    """Sum one counter kind over surfaces: {operation: n}."""
    out: dict[str, int] = {}
    for field, n in raw.items():
        parts = field.split(":", 2)
        if len(parts) == 3 and parts[0] == kind:
            out[parts[2]] = out.get(parts[2], 0) + n
    return out


_WARNING_EVENTS = ("state_restored", "emergency", "revoked", "terminated")


def log_audit_event(event: Mapping[str, str], event_id: str | None = None) -> None:
    """Emit one audit-log entry on the ``maintenance_guard`` logger.

    Structured fields go in ``extra`` as ``mg_<field>`` (``mg_event`` is the type,
    ``mg_actor``, ``mg_reason``, ``mg_at`` epoch seconds, ``mg_event_id`` the stream id).
    State restores and emergency steps log at WARNING, everything else at INFO.
    """
    kind = event.get("type", "unknown")
    actor = event.get("actor", "")
    reason = event.get("reason", "")
    extra: dict[str, Any] = {"mg_event": kind, "mg_event_id": event_id}
    for key, value in event.items():
        if key == "type":
            continue
        extra[f"mg_{key}"] = value
    try:
        extra["mg_at"] = float(event.get("at") or time.time())
    except ValueError:
        extra["mg_at"] = time.time()
    level = logging.WARNING if any(w in kind for w in _WARNING_EVENTS) else logging.INFO
    mode = event.get("mode") or event.get("previous_mode") or ""
    detail = f" ({mode})" if mode else ""
    logger.log(
        level,
        "maintenance %s%s by %s%s",
        kind,
        detail,
        actor or "unknown",
        f": {reason}" if reason else "",
        extra=extra,
    )
