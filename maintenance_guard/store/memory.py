"""`MemoryStore`: a `StateStore` in this process's memory.

For unit tests of an application (no Redis needed) and for single-process use: every
guard given the same `MemoryStore` shares the state, changes are versioned and audited
like in Redis, and subscribers are notified. Nothing crosses a process boundary, and
features that keep records in Redis (in-flight jobs, deferred work, emergency records)
need a `RedisStore`. Thread-safe.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import ChangeTooEarly, ConcurrentChange
from ..events import log_audit_event
from ..status import MaintenanceStatus
from ..tally import StoredWindow, WindowTally
from .protocol import SERVER_TIME, AuditEvent, Notice, PollResult, StateStamp, new_generation

_TIMED = ("started_at", "changed_at", "at", "opened_at")


class _MemorySubscription:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[Notice | None] = queue.SimpleQueue()

    def notify(self, stamp: StateStamp) -> None:
        self._queue.put(Notice(stamp))

    def interrupt(self) -> None:
        """Return a waiting `wait` at once (with None): the watcher is stopping."""
        self._queue.put(None)

    def wait(self, timeout: float) -> Notice | None:
        try:
            return self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def close(self) -> None:
        self._store._unsubscribe(self)


class MemoryStore:
    """`StateStore` in memory (see the module docstring). ``clock`` stands in for Redis'
    clock (times stamped on changes, the auto-end check)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, str] = {}
        self._events: list[AuditEvent] = []
        self._event_ids = itertools.count(1)
        self._attempts: Counter[str] = Counter()
        self._records: list[Mapping[str, str]] = []
        self._windows: dict[str, WindowTally] = {}
        self._presence: dict[str, dict[str, Any]] = {}
        self._subscribers: list[_MemorySubscription] = []

    def load_state(self) -> MaintenanceStatus | None:
        """The stored state, or None before the first change."""
        with self._lock:
            return MaintenanceStatus.from_fields(dict(self._state)) if self._state else None

    def poll(
        self,
        member: str,
        presence: Mapping[str, object],
        echo: str = "",
        reads: Sequence[str] = (),
    ) -> PollResult:
        """The stored stamp and this store's clock; records the caller's presence
        (``echo``: ignored, a memory subscription cannot go deaf; ``reads``: no keys
        here, each reads as None)."""
        with self._lock:
            self._presence[member] = dict(presence)
            return PollResult(self._stamp(), self.clock(), tuple(None for _ in reads))

    def change_state(
        self,
        fields: Mapping[str, str],
        event: Mapping[str, str],
        expected_version: int | None = None,
        *,
        not_before: float | None = None,
    ) -> MaintenanceStatus:
        """Write ``fields``, bump the version, log ``event`` and notify, atomically."""
        with self._lock:
            current = int(self._state.get("version") or 0)
            if expected_version is not None and expected_version != current:
                raise ConcurrentChange(
                    f"state changed meanwhile (expected version {expected_version}, "
                    f"found {current})"
                )
            now = self.clock()
            if not_before is not None and now < not_before:
                raise ChangeTooEarly(f"the store's clock ({now}) is before {not_before}")
            stamped = {k: repr(now) if k in _TIMED and v == SERVER_TIME else v
                       for k, v in fields.items()}  # fmt: skip
            generation = self._state.get("generation") or new_generation()
            self._state.update(stamped, version=str(current + 1), generation=generation)
            logged = {k: repr(now) if k in _TIMED and v == SERVER_TIME else v
                      for k, v in event.items()}  # fmt: skip
            event_id = self._append({**logged, "version": str(current + 1)})
            state = MaintenanceStatus.from_fields(dict(self._state))
            self._notify()
        log_audit_event({**logged, "version": str(current + 1)}, event_id)
        return state

    def restore_state(self, status: MaintenanceStatus, event: Mapping[str, str]) -> bool:
        """Write ``status`` back if the store holds none; True if this call did it."""
        with self._lock:
            if self._state:
                return False
            self._state = dict(status.to_fields())
            self._state["version"] = str(status.version + 1)
            self._state["generation"] = status.generation or new_generation()
            self._append({**event, "version": self._state["version"]})
            self._notify()
        return True

    def subscribe(self) -> _MemorySubscription:
        """A feed of change stamps."""
        subscription = _MemorySubscription(self)
        with self._lock:
            self._subscribers.append(subscription)
        return subscription

    def append_event(self, event: Mapping[str, str]) -> str:
        """Append an audit event that is not a state change; returns its id."""
        with self._lock:
            event_id = self._append(dict(event))
        log_audit_event(event, event_id)
        return event_id

    def read_events(self, limit: int = 50, since: float | None = None) -> list[AuditEvent]:
        """Audit events, newest first; ``since`` (epoch seconds) keeps only later ones."""
        with self._lock:
            events = [e for e in self._events if since is None or e.at >= since]
        return list(reversed(events))[:limit]

    def record_attempts(
        self,
        counts: Mapping[str, int],
        records: Sequence[Mapping[str, str]],
        windows: Mapping[str, WindowTally] | None = None,
    ) -> None:
        """Add to the attempt counters, keep the test-mode records, add to the window
        tallies (users kept by name: the count is exact here)."""
        with self._lock:
            self._attempts.update(counts)
            self._records.extend(dict(r) for r in records)
            for window, tally in (windows or {}).items():
                stored = self._windows.setdefault(window, WindowTally())
                stored.counts.update(tally.counts)
                stored.minutes.update(tally.minutes)
                stored.users.update(tally.users)
                stored.meta.update(tally.meta)

    def read_window(self, window: str | None = None) -> StoredWindow | None:
        """The tallies of ``window`` (None: the last one opened); None if none."""
        with self._lock:
            if window is None:
                window = max(self._windows, key=float, default=None)
            tally = self._windows.get(window) if window is not None else None
            if window is None or tally is None:
                return None
            return StoredWindow(
                window,
                dict(tally.counts),
                dict(tally.minutes),
                len(tally.users),
                dict(tally.meta),
            )

    def read_attempt_counts(self) -> dict[str, int]:
        """The attempt counters."""
        with self._lock:
            return dict(self._attempts)

    def count_inflight(self, now: float) -> int:
        """Always 0: in-flight jobs are tracked in Redis only."""
        return 0

    def record_presence(self, member: str, fields: Mapping[str, object]) -> None:
        """Write one process's presence record."""
        with self._lock:
            self._presence[member] = dict(fields)

    def remove_presence(self, member: str) -> None:
        """Forget one process's presence record."""
        with self._lock:
            self._presence.pop(member, None)

    def read_presence(self) -> dict[str, dict[str, Any]]:
        """Every presence record, by member."""
        with self._lock:
            return {k: dict(v) for k, v in self._presence.items()}

    def ping(self) -> None:
        """Always answers."""

    # --- internals (called with the lock held) ---

    def _stamp(self) -> StateStamp | None:
        if not self._state:
            return None
        return StateStamp(self._state.get("generation", ""), int(self._state["version"]))

    def _append(self, fields: dict[str, str]) -> str:
        event_id = f"{int(self.clock() * 1000)}-{next(self._event_ids)}"
        rest = {k: v for k, v in fields.items() if k not in ("type", "at", "actor", "reason")}
        self._events.append(
            AuditEvent(
                id=event_id,
                type=fields.get("type", "unknown"),
                at=float(fields.get("at") or self.clock()),
                actor=fields.get("actor", ""),
                reason=fields.get("reason", ""),
                fields=rest,
            )
        )
        del self._events[:-10_000]
        return event_id

    def _notify(self) -> None:
        stamp = self._stamp()
        if stamp is not None:
            for subscription in self._subscribers:
                subscription.notify(stamp)

    def _unsubscribe(self, subscription: _MemorySubscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)
