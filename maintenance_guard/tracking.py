"""`InflightTracker`: a process's running jobs, written to the in-flight registry by a
background writer, off the task's path.

The first change after a quiet spell is written at once: a lone job is in the registry
about a round trip after it starts, and its end as soon after it ends. Changes that
follow within ``WRITE_GAP`` are gathered: the writer then ticks every ``WRITE_GAP`` while
jobs keep starting or ending, and each tick sends, in one round trip, the ends and the
starts at least ``WRITE_GAP`` old. So a stream of short tasks wakes the writer once a
tick instead of twice a task and writes none of them, and a job that starts in such a
stream and runs on is in the registry within two ticks and a round trip of its start,
while Redis answers. Readers that need every running job (`drain`) allow
`INFLIGHT_VISIBLE_WITHIN` for it. No Celery import.
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

# Seconds between two writes of a process's writer while jobs keep starting or ending,
# and the age from which a start gathered meanwhile is written.
WRITE_GAP = 0.01
# Seconds after its start by which a running job's record has been written (two write
# gaps, a round trip and a busy machine's scheduling delay), while Redis answers.
INFLIGHT_VISIBLE_WITHIN = 0.1


class NullTracker:
    """The tracker of a guard whose store keeps no in-flight records (a `MemoryStore`)."""

    def started(self, job: InflightJob) -> None:
        """Nothing is recorded."""

    def finished(self, job_id: str) -> None:
        """Nothing is recorded."""

    def lost(self, job: InflightJob) -> None:
        """Nothing is recorded."""

    def flush(self, timeout: float) -> bool:
        """Nothing to write."""
        return True


class InflightTracker:
    """This process's running jobs, written to the registry off the task's path.

    `started` and `finished` only touch memory (and wake the writer when it is idle). The
    writer sends starts and ends in one pipelined round trip: at once after a quiet
    spell, then every ``gap`` seconds while changes keep coming (the ends, and the starts
    at least ``gap`` old), plus the heartbeats of running jobs every ``interval``. A hung
    Redis adds nothing to a task's run time: the writer catches up, coalesced, when Redis
    answers. Thread-safe; fork-aware (a forked child starts its own writer on first use).
    """

    def __init__(self, registry: InflightRegistry, interval: float, gap: float = WRITE_GAP):
        self.registry = registry
        self.interval = interval
        self.gap = gap
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
        # Starts not written yet: (job, when it is due, monotonic).
        self._to_start: dict[str, tuple[InflightJob, float]] = {}
        self._to_finish: set[str] = set()
        self._to_lose: dict[str, InflightJob] = {}
        self._ticking = False  # the writer has a write due (at `_tick`)
        self._tick = 0.0  # when (monotonic)
        self._last_write = -1e9  # when the writer last took what was due (monotonic)
        self._changed = False  # a job started or ended since the writer last took
        self._hurry = False  # `flush`: write everything now
        self._wake = threading.Event()
        self._idle = threading.Event()  # nothing waits and nothing is being written
        self._idle.set()
        self._writer = False

    def started(self, job: InflightJob) -> None:
        """``job`` runs now in this process (memory only)."""
        now = time.monotonic()
        with self._lock:
            self._running[job.id] = job
            # A pending end of an earlier run of this id stays: it removes that run's
            # record if this run ends before it is written. The first start after a quiet
            # spell is due at once, one among others once it is `gap` old.
            quiet = not self._ticking and now >= self._last_write + self.gap
            self._to_start[job.id] = (job, now if quiet else now + self.gap)
            if not self._note_change():
                return
        self._wake.set()

    def finished(self, job_id: str) -> None:
        """``job_id`` ended in this process (memory only)."""
        with self._lock:
            self._running.pop(job_id, None)
            if self._to_start.pop(job_id, None) is not None and job_id not in self._to_finish:
                self._changed = True
                return  # never written: nothing to take back
            self._to_finish.add(job_id)
            if not self._note_change():
                return
        self._wake.set()

    def lost(self, job: InflightJob) -> None:
        """``job`` died with the process that ran it, as this process saw (a prefork
        worker's main process, for a pool process that died under it): it is recorded
        as lost, with its record's details if it has one (memory only)."""
        with self._lock:
            self._running.pop(job.id, None)
            self._to_start.pop(job.id, None)
            self._to_finish.discard(job.id)
            self._to_lose[job.id] = job
            if not self._note_change():
                return
        self._wake.set()

    def _note_change(self) -> bool:
        # Under the lock. True if the writer must be woken: it had nothing due. The write
        # is due at once after a quiet spell, else `gap` after the last one.
        self._changed = True
        if self._ticking:
            return False
        self._ticking = True
        self._tick = max(time.monotonic(), self._last_write + self.gap)
        self._idle.clear()
        if not self._writer:
            self._writer = True
            threading.Thread(
                target=self._write_loop, name="maintenance-guard-inflight", daemon=True
            ).start()
        return True

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

    def _take(self, now: float) -> tuple[list[InflightJob], set[str], list[InflightJob]]:
        # Under the lock, on a tick: the starts due (all of them for a flush) and every
        # end. Ticks go on every `gap` while changes keep coming or starts wait; a tick
        # that finds neither ends the ticking.
        due = [job for job, at in self._to_start.values() if self._hurry or at <= now]
        for job in due:
            del self._to_start[job.id]
        finishes, self._to_finish = self._to_finish, set()
        finishes -= {job.id for job in due}  # the new run's record replaces the earlier one
        lost, self._to_lose = list(self._to_lose.values()), {}
        self._last_write = now
        if self._to_start or (self._changed and not self._hurry):
            self._tick = now + self.gap
        else:
            self._ticking = False
        self._changed = self._hurry = False
        return due, finishes, lost

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
            starts: list[InflightJob] = []
            finishes: set[str] = set()
            lost: list[InflightJob] = []
            alive: list[str] = []
            with self._lock:
                if self._ticking and (self._hurry or now >= self._tick):
                    starts, finishes, lost = self._take(now)
                self._hurry = False
                beat = now >= next_beat
                if beat:  # the jobs already written
                    alive = [i for i in self._running if i not in self._to_start]
            if beat:
                next_beat = now + self.interval
            wrote = bool(starts or finishes or lost)
            try:
                self.registry.write(starts, finishes, alive)
                starts, finishes = [], set()  # written: a failure below keeps only `lost`
                self.registry.lose(lost)
            except StoreUnavailable as exc:
                self._keep(starts, finishes, lost)
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
            if wrote:
                self.writes += 1
            with self._lock:
                if not self._ticking:
                    idle.set()

    def _keep(self, starts: list[InflightJob], finishes: set[str], lost: list[InflightJob]) -> None:
        # A write failed (or timed out, and may still land): what it carried is due
        # again. A job that ended meanwhile has its end pending already.
        with self._lock:
            now = time.monotonic()
            kept = {j.id: (j, now) for j in starts if j.id in self._running}
            self._to_start = {**kept, **self._to_start}
            self._to_finish |= finishes
            self._to_lose = {**{j.id: j for j in lost}, **self._to_lose}
            if self._to_start or self._to_finish or self._to_lose:
                self._note_change()


def _reset_in_child(ref: weakref.ReferenceType[InflightTracker]) -> None:
    tracker = ref()
    if tracker is not None:
        tracker._reset()
