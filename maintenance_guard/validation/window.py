"""The test-mode window in the audit log, and the tally of what was recorded in it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import MaintenanceGuardError
from ..events import AttemptRecord
from ..status import iso_utc
from ..store import AuditEvent

_ENDING_EVENTS = ("disabled", "auto_ended")
MAX_LISTED = 50


class NoTestWindow(MaintenanceGuardError):
    """The audit log holds no test-mode window to report on."""


@dataclass(frozen=True)
class TestWindow:
    """One period in test mode, from the audit log."""

    __test__ = False  # not a pytest test class, despite the name

    start: float
    end: float | None  # None while test mode is still on
    started_by: str
    reason: str

    def contains(self, at: float) -> bool:
        """True if ``at`` falls inside the window."""
        return at >= self.start and (self.end is None or at <= self.end)


def find_test_window(events: Iterable[AuditEvent]) -> TestWindow | None:
    """The latest test-mode window in ``events`` (any order), or None.

    A window opens when an event switches the mode to ``test`` from anything else and
    closes at the next event that switches it away (disable, auto-end, another mode).
    """
    window: TestWindow | None = None
    mode: str | None = None
    for event in sorted(events, key=lambda e: (e.at, e.id)):
        after = mode
        if event.type in _ENDING_EVENTS:
            after = None
        elif "mode" in event.fields and event.type in (
            "enabled",
            "mode_changed",
            "updated",
            "state_restored",
        ):
            after = event.fields["mode"] or None
        if after == "test" and mode != "test":
            window = TestWindow(event.at, None, event.actor, event.reason)
        elif mode == "test" and after != "test" and window is not None:
            window = TestWindow(window.start, event.at, window.started_by, window.reason)
        mode = after
    return window


@dataclass
class OperationTally:
    """Would-be refusals of one operation in the window."""

    attempts: int = 0
    would_block_normal: int = 0
    would_block_emergency: int = 0
    by_surface: dict[str, dict[str, int]] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)
    users: set[str] = field(default_factory=set)

    def add(self, record: AttemptRecord) -> None:
        """Count one record."""
        self.attempts += 1
        surface = self.by_surface.setdefault(
            record.surface, {"attempts": 0, "would_block_normal": 0, "would_block_emergency": 0}
        )
        surface["attempts"] += 1
        if record.would_block_normal:
            self.would_block_normal += 1
            surface["would_block_normal"] += 1
        if record.would_block_emergency:
            self.would_block_emergency += 1
            surface["would_block_emergency"] += 1
        if record.target:
            self.targets[record.target] = self.targets.get(record.target, 0) + 1
        if record.user:
            self.users.add(record.user)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (top targets only)."""
        top = sorted(self.targets.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_LISTED]
        return {
            "attempts": self.attempts,
            "would_block_normal": self.would_block_normal,
            "would_block_emergency": self.would_block_emergency,
            "by_surface": self.by_surface,
            "targets": dict(top),
            "distinct_users": len(self.users),
        }


def tally_records(
    records: Iterable[Mapping[str, str]], window: TestWindow
) -> tuple[dict[str, OperationTally], dict[str, Any]]:
    """Tally stream records inside ``window`` by operation (``-`` when unclassified).

    Returns the tallies and a summary: records read, in window, first/last attempt time.
    """
    tallies: dict[str, OperationTally] = {}
    read = inside = 0
    first: float | None = None
    last: float | None = None
    for fields in records:
        read += 1
        record = AttemptRecord.from_fields(dict(fields))
        if not window.contains(record.at):
            continue
        inside += 1
        first = record.at if first is None else min(first, record.at)
        last = record.at if last is None else max(last, record.at)
        tallies.setdefault(record.operation or "-", OperationTally()).add(record)
    summary = {
        "records_read": read,
        "records_in_window": inside,
        "first_attempt": iso_utc(first),
        "last_attempt": iso_utc(last),
    }
    return dict(sorted(tallies.items())), summary
