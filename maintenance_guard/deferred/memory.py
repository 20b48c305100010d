"""`MemoryDeferredQueue`: parked work in this process's memory, for a guard on a
`MemoryStore` (an application's unit tests, one process). Same interface and the same
rules as `DeferredQueue` (parked once per id, replayed in order, each once), nothing
shared between processes. Thread-safe."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .entry import DeferredEntry
from .queue import SENT_RETENTION, QueueCheck, ReplayReport

logger = logging.getLogger("maintenance_guard")


class MemoryDeferredQueue:
    """The parked submissions of one app, in memory."""

    def __init__(self, app: str = "memory") -> None:
        self.app = app
        self.last_marker: str | None = "memory"
        self._lock = threading.Lock()
        self._replay_lock = threading.Lock()
        self._parked: dict[str, DeferredEntry] = {}
        self._replaying: dict[str, DeferredEntry] = {}
        self._sent: dict[str, float] = {}

    def park(self, entry: DeferredEntry) -> bool:
        """Append ``entry`` unless its id is parked, being replayed or was replayed."""
        with self._lock:
            if entry.id in self._parked or entry.id in self._replaying or entry.id in self._sent:
                return False
            self._parked[entry.id] = entry
            return True

    def state_of(self, entry_id: str) -> str | None:
        """``"parked"``, ``"replaying"``, ``"sent"`` or None."""
        with self._lock:
            if entry_id in self._parked:
                return "parked"
            if entry_id in self._replaying:
                return "replaying"
            return "sent" if entry_id in self._sent else None

    def check(self) -> QueueCheck:
        """How many entries wait (memory is never lost while the process lives)."""
        with self._lock:
            return QueueCheck(len(self._parked), self.last_marker)

    def replay(
        self,
        send: Callable[[DeferredEntry], None],
        *,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> ReplayReport:
        """Send every parked entry through ``send``, in order, each once."""
        report = ReplayReport()
        if not self._replay_lock.acquire(blocking=False):
            report.skipped_locked = True
            return report
        try:
            while keep_going():
                with self._lock:
                    if not self._parked:
                        break
                    entry_id = next(iter(self._parked))
                    entry = self._replaying[entry_id] = self._parked.pop(entry_id)
                try:
                    send(entry)
                except Exception as exc:  # the broker failed: back to the head
                    report.failed.append(entry.id)
                    logger.warning(
                        "replay of deferred %s failed; kept for later: %s", entry.task, exc
                    )
                    with self._lock:
                        self._parked = {entry.id: self._replaying.pop(entry.id), **self._parked}
                    break
                with self._lock:
                    self._replaying.pop(entry.id, None)
                    now = time.time()
                    self._sent[entry.id] = now
                    self._sent = {k: t for k, t in self._sent.items() if t > now - SENT_RETENTION}
                report.sent.append(entry.id)
        finally:
            self._replay_lock.release()
        return report

    def entries(self) -> list[DeferredEntry]:
        """Parked entries, oldest first."""
        with self._lock:
            return list(self._parked.values())

    def replaying(self) -> list[DeferredEntry]:
        """Entries being replayed right now."""
        with self._lock:
            return list(self._replaying.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._parked)

    def register(self, info: Mapping[str, object]) -> dict[str, dict[str, Any]]:
        """No other app shares process memory: nothing to warn about."""
        return {}

    def claim_loss_report(self, marker: str | None) -> bool:
        """Memory is not lost while the process lives."""
        return False

    def lock_ttl(self) -> float:
        """A replay in this process holds no lock that outlives it."""
        return 0.0
