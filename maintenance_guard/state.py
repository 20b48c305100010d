"""`GuardState`: the maintenance state one process holds and keeps fresh.

The base of `MaintenanceGuard`: the store, the settings and catalog, the immutable
`Snapshot` the hot path reads (swapped in whole by `install`), the `StateWatcher` thread
that keeps it fresh, the buffered attempt counters and their flush, change listeners and
periodic tasks, and what happens at fork and at exit. No enable, disable or checks here.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import replace

from .errors import StoreUnavailable
from .events import AttemptRecorder, counter_field
from .feed import FeedFollower, StateFeed
from .modes import OperationCatalog, OperationMap
from .notify import Notifier, parse_targets
from .settings import GuardSettings
from .snapshot import Snapshot, build_snapshot, unknown_snapshot
from .status import INACTIVE, MaintenanceStatus
from .store import RedisStore, StateStamp, StateStore, event_fields
from .tally import FINISHED, window_meta
from .watcher import PeriodicTask, PollReader, StateWatcher, default_role

logger = logging.getLogger("maintenance_guard")

Clock = Callable[[], float]
ChangeListener = Callable[[MaintenanceStatus], None]


class GuardState:
    """The state this process enforces, kept fresh by a watcher thread. Thread-safe."""

    recorder: AttemptRecorder
    _watcher: StateWatcher
    _watching: bool

    def __init__(
        self,
        store: StateStore,
        settings: GuardSettings | None = None,
        *,
        catalog: OperationCatalog | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.store = store
        self.settings = settings or GuardSettings()
        self.catalog = catalog or OperationCatalog()
        self.task_operations = OperationMap(self.settings.task_operations)
        self.endpoint_operations = OperationMap(self.settings.endpoint_operations)
        self.task_operations.validate(self.catalog)
        self.endpoint_operations.validate(self.catalog)
        for name in self.settings.blocked_operations or ():
            self.catalog.require(name)
        self.clock = clock
        # Shown in the process presence record; adapters set "worker", "web", ...
        self.role = os.environ.get("MAINTENANCE_GUARD_ROLE") or default_role()
        self._listeners: list[ChangeListener] = []
        self._periodic: list[tuple[PeriodicTask, float]] = []
        self._readers: list[tuple[tuple[str, ...], PollReader]] = []
        self.store_errors = 0
        self._last_error_log = 0.0
        # Forked children (prefork pool processes) follow this process's state through
        # shared memory instead of each watching Redis (see feed.py).
        self._feed = StateFeed() if getattr(store, "shares_with_children", False) else None
        self._notifier: Notifier | None = None
        self._dispatched: StateStamp | None = None  # the state the listeners last heard of
        self._reset_process_state()
        self._snapshot = unknown_snapshot(self.catalog, self.settings)
        self.refresh()
        if self.settings.notify_urls:
            self._set_up_notifications()
        ref = weakref.ref(self)
        os.register_at_fork(
            before=lambda: _before_fork(ref), after_in_child=lambda: _after_fork(ref)
        )
        # Buffered attempt counts and test records reach the store when the process ends.
        atexit.register(_flush_at_exit, ref)

    def current(self) -> MaintenanceStatus:
        """The in-memory state (no I/O, no job count); expired auto-end reads as inactive."""
        snap = self._snapshot
        if snap.end_at is not None and self.now() >= snap.end_at:
            return replace(INACTIVE, version=snap.status.version, generation=snap.status.generation)
        return snap.status

    def now(self) -> float:
        """Epoch seconds on Redis' clock: this process's clock corrected by the offset
        the watcher measures at each poll (so a process whose clock is off decides times
        as the fleet does). Memory only."""
        return self.clock() + self._watcher.offset

    @property
    def snapshot(self) -> Snapshot:
        """What the hot path reads now."""
        return self._snapshot

    @property
    def watching(self) -> bool:
        """True while the watcher keeps `snapshot` current (after `start`, until `stop`)."""
        return self._watching

    @property
    def state_known(self) -> bool:
        """False until the state has been read from the store at least once."""
        return self._snapshot.known

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(status)`` from the watcher thread after every state change."""
        self._listeners.append(listener)
        self.start()

    def remove_listener(self, listener: ChangeListener) -> None:
        """Stop calling ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def add_periodic(self, task: PeriodicTask, every: float) -> None:
        """Call ``task()`` from the watcher thread about every ``every`` seconds (after a
        poll; at most once a poll). Exceptions are logged, never raised."""
        self._periodic.append((task, every))
        self._watcher.add_periodic(task, every)
        self.start()

    def add_poll_reader(self, keys: Sequence[str], reader: PollReader) -> None:
        """Read ``keys`` (under the store's hash tag) in the watcher's every poll, with no
        round trip of their own, and call ``reader(values)`` from the watcher thread: a
        list's length, a string's value, a stream's last id, None for a missing key."""
        self._readers.append((tuple(keys), reader))
        self._watcher.add_poll_reader(tuple(keys), reader)
        self.start()

    def refresh(self, *, raise_errors: bool = False) -> MaintenanceStatus:
        """Read the state from the store now. On failure keep the last known state
        (or raise `StoreUnavailable` if ``raise_errors``)."""
        read_at = self._installs
        try:
            stored = self.store.load_state()
        except StoreUnavailable as exc:
            self.note_store_error(exc)
            if raise_errors:
                raise
            return self._snapshot.status
        if stored is None:
            if self._snapshot.known and self._snapshot.status.worth_restoring(self.now()):
                self.restore_lost_state()
                return self._snapshot.status
            stored = INACTIVE
        self.install(stored, read_at)
        return self._snapshot.status

    def catch_up(self, *, from_now_on: bool = False) -> None:
        """A forked child: install its parent's state now if it changed (a memory read);
        ``from_now_on``: it calls this wherever it decides, so its follower reads the feed
        only every `LAZY_FOLLOW_INTERVAL`. A no-op in a process that watches Redis."""
        if isinstance(self._watcher, FeedFollower):
            self._watcher.catch_up(from_now_on=from_now_on)

    def start(self) -> None:
        """Start the background watcher (idempotent; done lazily by the checks), and the
        notifier where notifications are configured (not in a forked child: its parent
        sends)."""
        if self._watching:
            return
        with self._start_lock:
            if not self._watching:
                self._watcher.start()
                self._watching = True
                if self._notifier is not None and not isinstance(self._watcher, FeedFollower):
                    self._notifier.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the watcher, flush buffered counters and records, and say so in this
        process's presence record (a validation report tells a clean exit from a crash)."""
        was_watching = self._watching
        if self._notifier is not None:
            self._notifier.stop(timeout)
        self._watcher.stop(timeout)
        self._watching = False
        self.flush()
        if was_watching or self.recorder.total:
            self._watcher.record_presence(exited=True)
        self._stopped_at = self.recorder.total

    def flush(self, *, windows: bool = False) -> None:
        """Write buffered attempt counters, test records and window tallies to the store
        now, in one round trip. A window's description alone waits for counts to travel
        with, unless ``windows`` (this process opened or closed the window).

        On return, everything recorded before the call is in the store (unless it is
        unreachable): a flush running on the watcher thread is waited for.
        """
        with self._flush_lock:
            counts, records = self.recorder.take()
            tallies = self.recorder.take_tallies(force=windows or bool(counts or records))
            if not counts and not records and not tallies:
                return
            try:
                self.store.record_attempts(
                    counts, [r.to_fields() for r in records], windows=tallies
                )
            except StoreUnavailable as exc:
                self.recorder.put_back(counts, records)
                self.recorder.put_back_tallies(tallies, eager=windows)
                self.note_store_error(exc)
                return
            self.recorder.note_flushed(len(records))

    def note_job_finished(self, operation: str | None) -> None:
        """Count a job that finished while a maintenance window is open, in the window's
        tally (memory only; flushed with the attempt counters)."""
        window = self._snapshot.window
        if window is not None:
            self.recorder.count_in_window(window, counter_field("worker", operation, FINISHED))

    def install(self, stored: MaintenanceStatus, read_at: int | None = None) -> None:
        """Swap in ``stored`` (read when `_installs` was ``read_at``) unless this process
        already knows a newer state of the same history; calls the listeners on a change."""
        if read_at is None:
            read_at = self._installs
        with self._install_lock:
            old = self._snapshot
            same_history = stored.generation == old.status.generation
            if old.known and same_history and stored.version == old.status.version:
                if stored.mode == old.mode:
                    return
            elif old.known and same_history and stored.version < old.status.version:
                if read_at < self._installs:
                    # A read that raced a newer install (watcher vs. admin call): it would
                    # move this process back in time. A lower version read after the last
                    # install, or one of another history (an empty restart), is real.
                    return
            self._snapshot = build_snapshot(stored, self.catalog, self.settings)
            self._installs += 1
            if self._feed is not None and self._feed.forked and self._feed.owned:
                self._feed.publish(stored)
            self._note_windows(old, self._snapshot)
        self._call_listeners()

    def _call_listeners(self) -> None:
        """Tell the listeners about the state installed now, if they have not heard of it.

        Two threads can install one after the other (the watcher a notification, an admin
        call its own change) and reach this point in the other order. The listeners are
        called one thread at a time, with the snapshot current then, never an older one
        than they were last told: the last call they get is always the state in force (a
        worker's consumers are never left paused by a stale emergency)."""
        with self._dispatch_lock:
            snap = self._snapshot
            if not snap.known:
                return
            last = self._dispatched
            self._dispatched = snap.stamp
            if last is None or last == snap.stamp:
                return  # the first state this process learned is not a change
            for listener in list(self._listeners):
                try:
                    listener(snap.status)
                except Exception:  # a listener must not stop the watcher
                    logger.exception("maintenance-guard change listener failed")

    def _set_up_notifications(self) -> None:
        settings = self.settings
        if not isinstance(self.store, RedisStore):
            logger.warning(
                "notifications need the Redis store; none will be sent from this process",
                extra={"mg_event": "notify_unsupported"},
            )
            return
        targets = parse_targets(
            settings.notify_urls, settings.notify_secret, settings.notify_timeout
        )
        events = frozenset(settings.notify_events) if settings.notify_events is not None else None
        self._notifier = Notifier(self, targets, events, settings.notify_retry_for)
        self.add_poll_reader(self._notifier.poll_keys, self._notifier.read_poll)

    def _note_windows(self, old: Snapshot, new: Snapshot) -> None:
        """Describe the window under way and, once it ends, when it ended (buffered)."""
        if new.window is not None:
            self.recorder.note_window(new.window, window_meta(new.status))
        if old.known and old.window is not None and old.window != new.window:
            ended = new.status.changed_at if new.status.changed_at is not None else self.now()
            self.recorder.note_window(old.window, {"ended_at": repr(ended)})

    def beat(self) -> None:
        """Called on every turn of the watcher: tells forked children following this
        process's state that it is alive (no I/O)."""
        if self._feed is not None and self._feed.owned:
            self._feed.beat(self._watcher.offset)

    def install_pushed(self, pushed: MaintenanceStatus) -> None:
        """Install a state pushed to this process (a change notification, the parent's
        feed): it was current when it was sent, so it may be older than one this process
        installed since (its own change): within one history, never go back to it."""
        current = self._snapshot.status
        if (
            self._snapshot.known
            and pushed.generation == current.generation
            and pushed.version < current.version
        ):
            return
        self.install(pushed)

    def restore_lost_state(self) -> None:
        """Write the state this process enforces back into a store that lost it (Redis
        restarted without persistence); only the first process to try wins."""
        lost = self._snapshot.status
        event = event_fields(
            "state_restored",
            actor="maintenance-guard",
            reason="the store lost the maintenance state (Redis restarted without persistence)",
            mode=lost.mode.value if lost.mode else "",
            pid=str(os.getpid()),
        )
        try:
            self.store.restore_state(lost, event)  # logs state_restored if it won
            stored = self.store.load_state()
        except StoreUnavailable as exc:
            self.note_store_error(exc)
            return
        if stored is not None:
            self.install(stored)

    def note_store_error(self, exc: Exception) -> None:
        """Count a store error; log it at most every 30 s."""
        self.store_errors += 1
        now = time.monotonic()
        if now - self._last_error_log >= 30:
            self._last_error_log = now
            logger.warning(
                "maintenance state store unreachable; enforcing the last known state: %s",
                exc,
                extra={"mg_event": "store_error", "mg_errors": self.store_errors},
            )

    def _reset_process_state(self) -> None:
        old = getattr(self, "_watcher", None)
        self.recorder = AttemptRecorder()
        self._stopped_at = -1  # recorder.total when `stop()` last ran (-1: never)
        self._flush_lock = threading.Lock()
        self._install_lock = threading.Lock()
        # Reentrant: a listener may install (refresh) on the thread that called it.
        self._dispatch_lock = threading.RLock()
        self._installs = 0
        self._start_lock = threading.Lock()
        self._watching = False
        feed = getattr(self, "_feed", None)
        notifier = getattr(self, "_notifier", None)
        if notifier is not None and old is not None:
            notifier.leader = False  # a forked child: its threads are gone, the parent sends
        if feed is not None and not feed.owned:
            self._watcher = FeedFollower(self, feed)
        else:
            self._watcher = StateWatcher(self)
        if old is not None:
            self._watcher.offset = old.offset
        for task, every in self._periodic:
            self._watcher.add_periodic(task, every)
        for keys, reader in self._readers:
            self._watcher.add_poll_reader(keys, reader)


def _flush_at_exit(ref: weakref.ReferenceType[GuardState]) -> None:
    guard = ref()
    if guard is None or not (guard._watching or guard.recorder.total):
        return
    if not guard._watching and guard.recorder.total == guard._stopped_at:
        return  # `stop()` flushed and said so; nothing happened since
    # Not `stop()`: joining the watcher could hold the exit up to a poll interval.
    guard._watcher.stop_event.set()
    if guard._notifier is not None:
        guard._notifier.stop(timeout=0.5)  # gives the lock up: another process sends on
    guard.flush()
    guard._watcher.record_presence(exited=True)


def _before_fork(ref: weakref.ReferenceType[GuardState]) -> None:
    guard = ref()
    if guard is not None and guard._feed is not None:
        with guard._install_lock:  # not mid-install: the child starts from a whole state
            guard._feed.before_fork(guard._snapshot.status)
        if guard._watching:
            # A child forked before the watcher's first turn must not think it dead.
            guard._feed.beat(guard._watcher.offset)


def _after_fork(ref: weakref.ReferenceType[GuardState]) -> None:
    guard = ref()
    if guard is not None:
        # Threads do not survive fork; the child starts its own watcher lazily, and
        # drops the parent's unflushed counters so they are not counted twice.
        guard._reset_process_state()
