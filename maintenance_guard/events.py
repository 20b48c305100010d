"""Blocked-attempt counting and test-mode records, kept cheap on the hot path.

The hot path only touches an in-memory counter under a lock; the guard's background
thread flushes the counters and records to the store in one pipelined call a second.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

SURFACES = ("publish", "worker", "http", "login", "python")


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
        """Flat string fields for a Redis stream entry."""
        out: dict[str, str] = {}
        for key, value in asdict(self).items():
            if value is None:
                continue
            out[key] = ("1" if value else "0") if isinstance(value, bool) else str(value)
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


class AttemptRecorder:
    """Buffers counts and test-mode records until the next flush. Thread-safe."""

    MAX_BUFFERED_RECORDS = 50_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._records: list[AttemptRecord] = []
        self.dropped_records = 0

    def count(self, surface: str, operation: str | None, kind: str = "blocked") -> None:
        """Count one attempt (``kind`` is ``blocked`` or ``would_block``)."""
        field = counter_field(surface, operation, kind)
        with self._lock:
            self._counts[field] += 1

    def record(
        self,
        surface: str,
        operation: str | None,
        *,
        target: str | None,
        user: str | None,
        would_block_normal: bool,
        would_block_emergency: bool,
    ) -> None:
        """Buffer a test-mode record and count it."""
        rec = AttemptRecord(
            surface, operation, target, user, time.time(), would_block_normal, would_block_emergency
        )
        field = counter_field(surface, operation, "would_block")
        with self._lock:
            self._counts[field] += 1
            if len(self._records) < self.MAX_BUFFERED_RECORDS:
                self._records.append(rec)
            else:
                self.dropped_records += 1

    def take(self) -> tuple[dict[str, int], list[AttemptRecord]]:
        """Remove and return everything buffered."""
        with self._lock:
            counts, records = dict(self._counts), self._records
            self._counts = Counter()
            self._records = []
        return counts, records

    def put_back(self, counts: dict[str, int], records: list[AttemptRecord]) -> None:
        """Return a batch that could not be flushed, so it is tried again."""
        with self._lock:
            self._counts.update(counts)
            room = self.MAX_BUFFERED_RECORDS - len(self._records)
            self._records[:0] = records[:room]
            self.dropped_records += max(0, len(records) - room)


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
