"""`InflightTracker`: a process's running jobs, written to the in-flight registry by a
background writer that gathers the starts and ends of many jobs into one round trip.

While jobs start or end, the writer ticks every ``WRITE_DELAY``: a start is written at
the first tick it is that old, with every end, so a job that ends sooner is never
written and a stream of short tasks costs a round trip per tick instead of two per task.
A running job is in the registry within two ticks and a round trip of its start while
Redis answers; readers that need every running job (`drain`) allow for that
(`INFLIGHT_VISIBLE_WITHIN`). No Celery import.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING

from .errors import StoreUnavailable

if TYPE_CHECKING:
    from .inflight import InflightJob, InflightRegistry

logger = logging.getLogger("maintenance_guard")

# Seconds between the writer's ticks, and the age from which a start is written.
WRITE_DELAY = 0.02


class NullTracker:
    """The tracker of a guard whose store keeps no in-flight records (a `MemoryStore`)."""

    def started(self, job: InflightJob) -> None:
        """Nothing is recorded."""

    def finished(self, job_id: str) -> None:
        """Nothing is recorded."""

    def flush(self, timeout: float) -> bool:
        """Nothing to write."""
        return True


class InflightTracker:
    """This process's running jobs, written to the registry off the task's path.

    `started` and `finished` only touch memory. While jobs start or end, a writer thread
    ticks every ``delay`` seconds and sends, in one pipelined round trip, the starts that
    are at least ``delay`` old and every end (and the heartbeats, every ``interval``): a
    job that ends within ``delay`` is never written, one that runs on is written within
    two ticks, and a hung Redis adds nothing to a task's run time (the writer catches up
    when Redis answers). Thread-safe; fork-aware (a child starts its own writer).
    """

    def __init__(
        self, registry: InflightRegistry, interval: float, delay: float = WRITE_DELAY
    ) -> None:
        self.registry = registry
        self.interval = interval
        self.delay = delay
        self.failures = 0
        self.writes = 0  # round trips sent with starts or ends (not heartbeats alone)
        self._reset()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reset_in_child(ref))

    def _reset(self) -> None:
        # Also the state of a forked child: the parent's writer thread did not come
        # along, and its lock may have been held at the fork.
        self._lock = threading.Lock()
        self._running: dict[str, InflightJob] = {}
        # Starts not written yet, oldest first, with their time (monotonic).
        self._to_start: dict[str, tuple[InflightJob, float]] = {}
        self._to_finish: set[str] = set()
        self._ticking = False  # the writer ticks (it was woken for a change)
        self._tick = 0.0  # its next tick (monotonic)
        self._active = False  # a job started or ended since the last tick
        self._hurry = False  # `flush`: write everything now
        self._wake = threading.Event()
        self._idle = threading.Event()  # nothing waits and nothing is being written
        self._idle.set()
        self._writer = False

    def started(self, job: InflightJob) -> None:
        """``job`` runs now in this process (memory only)."""
        at = time.monotonic()
        with self._lock:
            self._running[job.id] = job
            self._to_start.pop(job.id, None)  # keep the oldest-first order
            # A pending end of an earlier run of this id stays: it removes that run's
            # record if this run ends before it is written.
            self._to_start[job.id] = (job, at)
            self._active = True
            if self._ticking:
                return
            self._start_ticking(at)
        self._wake.set()

    def finished(self, job_id: str) -> None:
        """``job_id`` ended in this process (memory only)."""
        with self._lock:
            self._running.pop(job_id, None)
            self._active = True
            if self._to_start.pop(job_id, None) is not None:
                return  # never written: nothing to take back
            self._to_finish.add(job_id)
            if self._ticking:
                return
            self._start_ticking(time.monotonic())
        self._wake.set()

    def _start_ticking(self, now: float) -> None:
        # Under the lock. Ticking goes on while jobs start or end (a tick that finds
        # nothing waiting and no change since the last one stops it), so a stream of
        # tasks wakes the writer once a tick, not once a task.
        self._ticking = True
        self._tick = now + self.delay
        self._idle.clear()
        if not self._writer:
            self._writer = True
            threading.Thread(
                target=self._write_loop, name="maintenance-guard-inflight", daemon=True
            ).start()

    def running(self) -> list[str]:
        """Ids of the jobs running in this process."""
        with self._lock:
            return list(self._running)

    def flush(self, timeout: float) -> bool:
        """Write every change now; wait up to ``timeout`` for it to reach the registry.
        True if it did."""
        if self._idle.is_set():
            return True
        with self._lock:
            self._hurry = True
        self._wake.set()
        return self._idle.wait(timeout)

    def _take(self, now: float) -> tuple[list[tuple[InflightJob, float]], set[str], bool]:
        # Under the lock, on a tick: the starts due, every end, and whether to stop
        # ticking (nothing left waiting and, unless flushing, no change since the last).
        cutoff = now if self._hurry else now - self.delay
        starts: list[tuple[InflightJob, float]] = []
        for job, at in self._to_start.values():
            if at > cutoff:
                break
            starts.append((job, at))
        for job, _at in starts:
            del self._to_start[job.id]
        finishes, self._to_finish = self._to_finish, set()
        finishes -= {job.id for job, _at in starts}  # the new run's record replaces it
        stop = not self._to_start and (self._hurry or not self._active)
        self._active = self._hurry = False
        if stop:
            self._ticking = False
        else:
            self._tick = now + self.delay
        return starts, finishes, stop

    def _write_loop(self) -> None:
        wake, idle = self._wake, self._idle
        next_beat = time.monotonic() + self.interval
        backoff = 0.0
        while True:
            with self._lock:
                until = min(self._tick, next_beat) if self._ticking else next_beat
                hurry = self._hurry
            if not hurry:
                wake.wait(max(0.0, until - time.monotonic()))
            wake.clear()
            now = time.monotonic()
            starts: list[tuple[InflightJob, float]] = []
            finishes: set[str] = set()
            alive: list[str] = []
            stopped = False
            with self._lock:
                if self._ticking and (self._hurry or now >= self._tick):
                    starts, finishes, stopped = self._take(now)
                self._hurry = False  # a flush that came as ticking stopped: nothing left
                beat = now >= next_beat
                if beat:  # the jobs already written
                    alive = [i for i in self._running if i not in self._to_start]
            if beat:
                next_beat = now + self.interval
            try:
                self.registry.write([job for job, _at in starts], finishes, alive)
            except StoreUnavailable as exc:
                with self._lock:
                    kept = {j.id: (j, at) for j, at in starts if j.id in self._running}
                    self._to_start = {**kept, **self._to_start}
                    self._to_finish |= finishes
                    if (self._to_start or self._to_finish) and not self._ticking:
                        self._start_ticking(time.monotonic())
                self.failures += 1
                backoff = min(5.0, max(0.1, backoff * 2))
                if self.failures == 1 or self.failures % 50 == 0:
                    logger.warning(
                        "cannot write in-flight records (kept, retried): %s",
                        exc,
                        extra={"mg_event": "inflight_write_failed", "mg_failures": self.failures},
                    )
                time.sleep(backoff)  # Redis is down or hung: do not retry in a loop
                continue
            backoff = 0.0
            if starts or finishes:
                self.writes += 1
            if stopped:
                with self._lock:
                    if not self._ticking:
                        idle.set()


def _reset_in_child(ref: weakref.ReferenceType[InflightTracker]) -> None:
    tracker = ref()
    if tracker is not None:
        tracker._reset()
