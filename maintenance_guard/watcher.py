"""`StateWatcher`: the background thread that keeps one guard's state fresh.

It listens for change notifications (pub/sub is at-most-once) and polls about once a
`poll_interval` to repair a missed one; the poll also measures this process's clock
against Redis' (`offset`), writes the process's presence record, and is when buffered
attempt counters are flushed and periodic tasks (`add_periodic`) run. It ends an
auto-ending maintenance on time (Redis' clock decides) and restores a state that Redis
lost. One thread per guard and process; a forked child starts its own.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .errors import ChangeTooEarly, ConcurrentChange, StoreUnavailable
from .scheduling import advance_windows
from .status import INACTIVE
from .store import SERVER_TIME, Notice, event_fields

if TYPE_CHECKING:
    from .state import GuardState

logger = logging.getLogger("maintenance_guard")

PeriodicTask = Callable[[], None]
# Called after each successful poll with the values of its keys (see `add_poll_reader`).
PollReader = Callable[[tuple[str | None, ...]], None]

# A clock reading whose round trip took longer than this is too uncertain to correct by.
MAX_CLOCK_SAMPLE_RTT = 0.25
# Clocks that agree within a reading's uncertainty plus this are taken as equal (on one
# machine they are): correcting by noise would move publish stamps across `enable`.
CLOCK_TOLERANCE = 0.002
CLOCK_SAMPLES = 8
# Every this many polls one asks the subscription for an echo (see `_deaf`): often enough
# that redis-py never sends a health-check PING (15 s), rare enough to cost little.
ECHO_EVERY = 5


def presence_member() -> str:
    """This process's name in the presence records: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def default_role() -> str:
    """The role shown in the presence record: the program's name."""
    path = sys.argv[0] if sys.argv and sys.argv[0] else ""
    name = os.path.basename(path)
    if name == "__main__.py":  # python -m celery: name the package, not its __main__
        name = os.path.basename(os.path.dirname(path))
    return name or "python"


class StateWatcher:
    """The watcher thread of one guard (see the module docstring). Not thread-safe to
    start from several threads at once: the guard serialises `start`."""

    def __init__(self, guard: GuardState) -> None:
        self.guard = guard
        # Seconds to add to the guard's clock to read Redis' clock.
        self.offset = 0.0
        self._samples: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=CLOCK_SAMPLES
        )
        # [task, every (s), next due (monotonic)]
        self.periodic: list[list[Any]] = []
        self.readers: list[tuple[tuple[str, ...], PollReader]] = []
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.subscription: Any = None  # the store subscription the thread waits on
        self._echo_polls = 0  # polls that asked `subscription` for an echo
        self._polls = 0

    def start(self) -> None:
        """Run the watcher thread (once)."""
        self.stop_event.clear()
        self.thread = threading.Thread(
            target=self._run, name="maintenance-guard-watcher", daemon=True
        )
        self.thread.start()

    def stop(self, timeout: float) -> None:
        """Stop the thread and wait up to ``timeout`` for it."""
        self.stop_event.set()
        interrupt = getattr(self.subscription, "interrupt", None)
        if interrupt is not None:  # a MemoryStore's subscription wakes at once
            interrupt()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.thread = None

    def add_periodic(self, task: PeriodicTask, every: float) -> None:
        """Call ``task()`` about every ``every`` seconds, after a poll."""
        self.periodic.append([task, every, 0.0])

    def add_poll_reader(self, keys: tuple[str, ...], reader: PollReader) -> None:
        """Read ``keys`` in every poll (no extra round trip) and pass their values to
        ``reader``."""
        self.readers.append((keys, reader))

    def presence(self, *, exited: bool = False) -> dict[str, object]:
        """This process's presence record now."""
        guard = self.guard
        snap = guard.snapshot
        fields: dict[str, object] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "role": guard.role,
            "version": snap.status.version if snap.known else None,
            "generation": snap.status.generation if snap.known else None,
            "mode": snap.status.mode.value if snap.status.mode else None,
            "seen_at": guard.now(),
            "poll_interval": guard.settings.poll_interval,
            "recorded": guard.recorder.total,
            "flushed": guard.recorder.flushed,
        }
        if exited:
            fields["exited"] = True
        return fields

    def record_presence(self, *, exited: bool = False) -> None:
        """Write this process's presence record now (a report tells from it which state
        each live process has seen, and whether one that ended flushed first)."""
        try:
            self.guard.store.record_presence(presence_member(), self.presence(exited=exited))
        except StoreUnavailable as exc:
            self.guard.note_store_error(exc)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        """The thread: `_watch`, started again after anything it did not expect (an
        error of the store's client that is not a `StoreUnavailable`, a bug), so a
        process never silently stops following the state."""
        while not self.stop_event.is_set():
            try:
                self._watch()
            except Exception:
                logger.exception("maintenance-guard watcher failed; restarting it in 1 s")
                self.stop_event.wait(1.0)

    def _watch(self) -> None:
        guard = self.guard
        subscription = None
        interval = guard.settings.poll_interval
        next_poll = 0.0
        retry = {"auto_end": 0.0, "pause_end": 0.0, "window": 0.0}
        stop = self.stop_event
        try:
            while not stop.is_set():
                guard.beat()
                now = time.monotonic()
                if subscription is None:
                    try:
                        subscription = self.subscription = guard.store.subscribe()
                        self._echo_polls = 0
                        next_poll = 0.0  # we may have missed messages while unsubscribed
                    except StoreUnavailable as exc:
                        guard.note_store_error(exc)
                        stop.wait(min(interval, 0.5))
                notice: Notice | None = None
                if subscription is not None:
                    try:
                        notice = subscription.wait(max(0.0, min(next_poll - now, interval)))
                    except StoreUnavailable as exc:
                        guard.note_store_error(exc)
                        subscription.close()
                        subscription = None
                        continue
                if stop.is_set():
                    break
                if notice is not None and notice.stamp != guard.snapshot.stamp:
                    if notice.status is not None:
                        guard.install_pushed(notice.status)
                    else:
                        guard.refresh()
                if time.monotonic() >= next_poll:
                    # The first poll after (re)subscribing is at once; the next at a random
                    # point of the interval, then one interval apart: processes started
                    # together (a deploy) do not all poll at the same instant every second.
                    spread = next_poll == 0.0 and subscription is not None
                    next_poll = time.monotonic() + interval * (random.random() if spread else 1)
                    if subscription is not None and self._deaf(subscription):
                        subscription.close()
                        subscription = None
                        next_poll = 0.0
                        continue
                    self._poll(subscription)
                    guard.flush()
                    self._run_periodic()
                self._timed_changes(retry)
        finally:
            if subscription is not None:
                subscription.close()

    def _deaf(self, subscription: Any) -> bool:
        """True if the echoes the last two echoing polls asked for never came (`ECHO_EVERY`
        polls apart): the connection is half-open or the subscription was dropped;
        subscribe again."""
        echoes = getattr(subscription, "echoes", None)
        if echoes is None:  # a subscription without echoes (a memory store)
            return False
        if self._echo_polls - echoes >= 2:
            logger.warning(
                "maintenance-guard change notifications stopped arriving; subscribing again",
                extra={"mg_event": "subscription_deaf"},
            )
            return True
        return False

    def _timed_changes(self, retry: dict[str, float]) -> None:
        """Timed changes this process may make when due (each at most every 0.2 s while
        it stays due: another process may have made it first)."""
        guard = self.guard
        snap = guard.snapshot
        interval = guard.settings.poll_interval
        for name, due_at, action in (
            ("auto_end", snap.end_at, self._auto_end),
            ("pause_end", snap.pause_end_at, self._end_pauses),
            ("window", snap.window_event_at, lambda: advance_windows(guard)),
        ):
            if due_at is not None and guard.now() >= due_at and time.monotonic() >= retry[name]:
                retry[name] = time.monotonic() + min(interval, 0.2)
                action()

    def _poll(self, subscription: Any = None) -> None:
        """One round trip: the stored stamp, Redis' clock and the presence record (and
        the echo that proves ``subscription`` still receives)."""
        guard = self.guard
        echo = getattr(subscription, "echo_channel", "")
        self._polls += 1
        if self._polls % ECHO_EVERY:
            echo = ""
        readers = list(self.readers)
        keys = [key for wanted, _ in readers for key in wanted]
        sent = guard.clock()
        try:
            result = guard.store.poll(presence_member(), self.presence(), echo, keys)
        except StoreUnavailable as exc:
            guard.note_store_error(exc)
            return
        if echo:
            self._echo_polls += 1
        at = 0
        for wanted, reader in readers:
            try:
                reader(result.reads[at : at + len(wanted)])
            except Exception:  # a reader must not stop the watcher
                logger.exception("maintenance-guard poll reader failed")
            at += len(wanted)
        self._correct_clock(sent, guard.clock(), result.server_time)
        snap = guard.snapshot
        if result.stamp is None:
            if snap.known and snap.status.worth_restoring(guard.now()):
                guard.restore_lost_state()
            elif not snap.known or snap.status.generation:
                guard.refresh()  # never read, or the store restarted empty
        elif result.stamp != snap.stamp or not snap.known:
            guard.refresh()

    def _correct_clock(self, sent: float, received: float, server_time: float) -> None:
        """Offset to Redis' clock from the reading with the shortest round trip among the
        last few (its error is at most half that round trip); none within that error."""
        rtt = received - sent
        if rtt > MAX_CLOCK_SAMPLE_RTT:
            return
        self._samples.append((rtt, server_time - (sent + received) / 2))
        best_rtt, offset = min(self._samples)
        self.offset = 0.0 if abs(offset) <= best_rtt / 2 + CLOCK_TOLERANCE else offset

    def _run_periodic(self) -> None:
        now = time.monotonic()
        for entry in list(self.periodic):
            task, every, due = entry
            if now < due:
                continue
            entry[2] = now + every
            try:
                task()
            except Exception:  # a periodic task must not stop the watcher
                logger.exception("maintenance-guard periodic task failed")

    def _auto_end(self) -> None:
        guard = self.guard
        snap = guard.snapshot
        if snap.end_at is None:
            return
        event = event_fields(
            "auto_ended",
            actor="maintenance-guard",
            reason="the announced end time passed (auto_end)",
            at=SERVER_TIME,
            previous_mode=snap.mode.value if snap.mode else "",
        )
        # The queue pauses are not maintenance: they outlive it.
        kept = snap.status
        fields = dict(
            replace(INACTIVE, paused_queues=kept.paused_queues, windows=kept.windows).to_fields()
        )
        fields["changed_at"] = SERVER_TIME
        try:
            # Redis' clock decides: a process whose clock runs ahead cannot end it early.
            stored = guard.store.change_state(
                fields, event, expected_version=snap.status.version, not_before=snap.end_at
            )
        except ChangeTooEarly:
            return  # this process's clock estimate was a little ahead; try at the next poll
        except ConcurrentChange:
            guard.refresh()  # another process ended or changed it first
            return
        except StoreUnavailable as exc:
            guard.note_store_error(exc)
            return
        guard.install(stored)
        guard.flush(windows=True)  # the window's end, recorded now (tally.py)

    def _end_pauses(self) -> None:
        """Remove the queue pauses whose end has passed, once across the fleet (compare-
        and-set; Redis' clock decides), with a ``pause_ended`` event. Until then every
        process already treats them as ended."""
        guard = self.guard
        status = guard.snapshot.status
        now = guard.now()
        ended = [p for p in status.paused_queues if not p.in_effect(now)]
        if not ended:
            return
        left = [p.to_fields() for p in status.paused_queues if p.in_effect(now)]
        event = event_fields(
            "pause_ended",
            actor="maintenance-guard",
            reason="the pause's end time passed (--for)",
            at=SERVER_TIME,
            queues=[p.queue for p in ended],
        )
        try:
            stored = guard.store.change_state(
                {"paused_queues": json.dumps(left)},
                event,
                expected_version=status.version,
                not_before=max(p.ends_at or 0.0 for p in ended),
            )
        except ChangeTooEarly:
            return
        except ConcurrentChange:
            guard.refresh()
            return
        except StoreUnavailable as exc:
            guard.note_store_error(exc)
            return
        guard.install(stored)
