"""`Replayer`: replays one broker's parked work from a background thread, retrying
with backoff while the broker is down and once a dead replayer's lock expires."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Protocol

from ..errors import StoreUnavailable
from .entry import DeferredEntry
from .queue import QueueCheck, ReplayReport

logger = logging.getLogger("maintenance_guard")


class ReplayableQueue(Protocol):
    """What a `Replayer` needs of a queue (`DeferredQueue`, `MemoryDeferredQueue`)."""

    def replay(
        self,
        send: Callable[[DeferredEntry], None],
        *,
        keep_going: Callable[[], bool] = ...,
    ) -> ReplayReport: ...

    def check(self) -> QueueCheck: ...

    def lock_ttl(self) -> float: ...


class Replayer:
    """Replays one queue from a background thread whenever asked, until it is empty.

    A pass that fails (the broker is down) is retried with backoff, in order; a pass that
    finds the lock taken (another process replays, or a dead one's lock has not expired)
    is retried once the lock expires. Thread-safe; fork-aware (a child starts its own
    thread on first use).
    """

    def __init__(
        self,
        queue: ReplayableQueue,
        send: Callable[[DeferredEntry], None],
        maintenance_off: Callable[[], bool],
        *,
        first_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.queue = queue
        self.send = send
        self.maintenance_off = maintenance_off
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self._wake = threading.Event()
        self._pid = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.passes = 0

    def request(self) -> None:
        """Replay soon (from the background thread); returns at once."""
        with self._lock:
            if self._stopped:
                return
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._wake = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, name="maintenance-guard-replayer", daemon=True
                )
                self._thread.start()
            self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop replaying (a pass under way stops after the entry it is sending) and wait
        up to ``timeout`` for the thread; `request` does nothing afterwards."""
        with self._lock:
            self._stopped = True
            self._wake.set()
            thread = self._thread if self._pid == os.getpid() else None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _keep_going(self) -> bool:
        return not self._stopped and self.maintenance_off()

    def _run(self) -> None:
        wake = self._wake
        backoff = self.first_backoff
        while not self._stopped:
            wake.wait()
            wake.clear()
            while not self._stopped:
                outcome = self._one_pass()
                if outcome == "done":
                    backoff = self.first_backoff
                    break
                if outcome == "failed":
                    delay, backoff = backoff, min(self.max_backoff, backoff * 2)
                elif outcome == "locked":
                    delay = self._lock_ttl() + 0.2
                else:  # "more": entries were parked while this pass ran
                    delay = 0.05
                if wake.wait(delay):
                    wake.clear()

    def _one_pass(self) -> str:
        """Replay once: ``done``, ``failed`` (retry with backoff), ``locked`` (retry when
        the lock expires) or ``more`` (retry at once)."""
        try:
            if not self._keep_going():
                return "done"
            report = self.queue.replay(self.send, keep_going=self._keep_going)
            self.passes += 1
            if report.failed:
                return "failed"
            if report.skipped_locked:
                return "locked"
            if self._keep_going() and self.queue.check().pending:
                return "more"
            return "done"
        except StoreUnavailable as exc:
            logger.warning(
                "cannot replay deferred submissions: %s", exc, extra={"mg_event": "replay_failed"}
            )
            return "failed"
        except Exception:
            logger.exception("replaying deferred submissions failed")
            return "failed"

    def _lock_ttl(self) -> float:
        try:
            return self.queue.lock_ttl()
        except StoreUnavailable:
            return self.first_backoff
