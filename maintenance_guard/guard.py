"""`MaintenanceGuard`: enable, disable, status, and the hot-path checks.

Each process keeps the last state in memory; `is_blocked` and `check` read only that.
A background thread listens for change notifications (pub/sub) and polls the version
about once a second to repair a missed notification, ends auto-ending maintenance on
time, restores a state that Redis lost, and flushes attempt counters.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from .errors import (
    ChangeTooEarly,
    ConcurrentChange,
    InvalidInput,
    MaintenanceActive,
    StoreUnavailable,
)
from .events import AttemptRecorder
from .inputs import clean_actor, clean_note, clean_reason, parse_duration
from .modes import (
    MaintenanceMode,
    Operation,
    OperationCatalog,
    OperationMap,
    blocked_operations_for,
    decide,
)
from .settings import GuardSettings
from .status import INACTIVE, MaintenanceStatus
from .store import SERVER_TIME, AuditEvent, RedisStore, StateStamp, StateStore, event_fields

logger = logging.getLogger("maintenance_guard")

Clock = Callable[[], float]
ChangeListener = Callable[[MaintenanceStatus], None]
PeriodicTask = Callable[[], None]
StateCheck = Callable[[MaintenanceStatus | None], None]

# A clock reading whose round trip took longer than this is too uncertain to correct by.
MAX_CLOCK_SAMPLE_RTT = 0.25
# Clocks that agree within a reading's uncertainty plus this are taken as equal (on one
# machine they are): correcting by noise would move publish stamps across `enable`.
CLOCK_TOLERANCE = 0.002
CLOCK_SAMPLES = 8

# Set while the current request/task acts for an admin (see `MaintenanceGuard.admin_bypass`).
_ADMIN_SCOPE: ContextVar[bool] = ContextVar("maintenance_guard_admin_scope", default=False)

UNKNOWN_STATE_REASON = "maintenance state unknown: the state store cannot be reached"


@dataclass(frozen=True)
class _Snapshot:
    """What the hot path reads: one immutable object swapped in whole."""

    status: MaintenanceStatus
    blocked: frozenset[str]
    normal_blocked: frozenset[str]
    end_at: float | None  # auto-end time, if any
    known: bool

    @property
    def mode(self) -> MaintenanceMode | None:
        return self.status.mode

    @property
    def stamp(self) -> StateStamp:
        return StateStamp(self.status.generation, self.status.version)


class MaintenanceGuard:
    """The fleet-wide maintenance switch and the checks every adapter calls.

    Thread-safe. `is_blocked` and `check` never touch the network and never raise a
    store error; `enable`/`disable` raise `StoreUnavailable` if Redis cannot be reached
    and `InvalidInput` (a `ValueError`) for bad arguments, changing nothing.
    """

    _watching: bool
    _thread: threading.Thread | None
    _recorder: AttemptRecorder
    _start_lock: threading.Lock
    _stop_event: threading.Event
    _flush_lock: threading.Lock
    _install_lock: threading.Lock
    _installs: int

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
        if self.settings.blocked_operations is not None:
            for name in self.settings.blocked_operations:
                self.catalog.require(name)
        self._clock = clock
        # Shown in the process presence record; adapters set "worker", "web", ...
        self.role = os.environ.get("MAINTENANCE_GUARD_ROLE") or _default_role()
        self._listeners: list[ChangeListener] = []
        # [task, every (s), next due (monotonic)]; run by the watcher after each poll.
        self._periodic: list[list[Any]] = []
        # Seconds to add to ``clock`` to read Redis' clock (measured at every poll).
        self._clock_offset = 0.0
        self._clock_samples: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=CLOCK_SAMPLES
        )
        self.store_errors = 0
        self._last_error_log = 0.0
        self._reset_process_state()
        self._snapshot = self._unknown_snapshot()
        self.refresh()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))
        # Buffered attempt counts and test records reach the store when the process ends.
        atexit.register(_flush_at_exit, ref)

    @classmethod
    def from_url(cls, url: str | None = None, **settings: Any) -> MaintenanceGuard:
        """A guard on the Redis at ``url``; None means ``$MAINTENANCE_GUARD_REDIS_URL``,
        else the embedded server (started if needed). ``settings`` are `GuardSettings` fields.
        """
        from .embedded import resolve_url

        clock = settings.pop("clock", time.time)
        catalog = settings.pop("catalog", None)
        config = GuardSettings(redis_url=url, **settings)
        store = RedisStore.from_url(resolve_url(url), prefix=config.key_prefix)
        return cls(store, config, catalog=catalog, clock=clock)

    # ------------------------------------------------------------------ hot path

    def is_blocked(self, operation: str | Operation, is_admin: bool = False) -> bool:
        """True if ``operation`` is refused now for this caller. Memory only.

        Raises `UnknownOperation` for a name not in the catalog.
        """
        if type(operation) is not str:  # enum members hash by name, not value
            operation = self.catalog.require(operation)
        if operation not in self.catalog:
            self.catalog.require(operation)
        if not self._watching:
            self.start()
        snap = self._snapshot
        if snap.status.mode is None or is_admin or _ADMIN_SCOPE.get():
            return False
        if snap.end_at is not None and self.now() >= snap.end_at:
            return False
        return operation in snap.blocked

    def check(
        self,
        operation: str | Operation | None,
        *,
        is_admin: bool = False,
        surface: str = "python",
        target: str | None = None,
        user: str | None = None,
        normal_exempt: bool = False,
    ) -> None:
        """Raise `MaintenanceActive` if the attempt is refused; record it in test mode.

        ``operation=None`` means unclassified (only emergency refuses it). Memory only.
        ``normal_exempt``: the caller lets this attempt through in normal mode (running
        work, a message published before maintenance); test mode records it as not
        refused by normal. Callers still skip the call themselves in normal mode.
        """
        name: str | None = None
        if operation is not None:
            name = operation.value if isinstance(operation, Operation) else operation
            if name not in self.catalog:
                self.catalog.require(name)
        if not self._watching:
            self.start()
        snap = self._snapshot
        mode = snap.status.mode
        if mode is None or is_admin or _ADMIN_SCOPE.get():
            return
        if snap.end_at is not None and self.now() >= snap.end_at:
            return
        if mode is not MaintenanceMode.TEST and name is not None and name not in snap.blocked:
            return
        decision = decide(
            mode, name, snap.blocked, is_admin=False, normal_blocked=snap.normal_blocked
        )
        if mode is MaintenanceMode.TEST:
            self._recorder.record(
                surface,
                name,
                target=target,
                user=user,
                would_block_normal=decision.would_block_normal and not normal_exempt,
                would_block_emergency=decision.would_block_emergency,
            )
            return
        if decision.blocked:
            self._recorder.count(surface, name)
            raise self.refusal(name, snap.status)

    def note_admin_attempt(self, surface: str, operation: str | None) -> None:
        """Count an attempt maintenance let through because an admin made it (counter
        kind ``admin``; memory only, flushed with the other counters)."""
        if self._snapshot.status.mode is not None:
            self._recorder.count(surface, operation, kind="admin")

    def login_allowed(self, user_is_admin: bool = False, *, user: str | None = None) -> bool:
        """False while an emergency refuses non-admin logins (counted on surface ``login``).

        Memory only, like `check`; login opens again as soon as the emergency ends.
        """
        try:
            self.check(None, is_admin=bool(user_is_admin), surface="login", user=user)
        except MaintenanceActive:
            return False
        return True

    @staticmethod
    @contextmanager
    def admin_bypass() -> Iterator[None]:
        """Within this block (this thread or asyncio task), every check passes as an admin's.

        The Flask extension enters it for admin requests, so tasks an admin submits from a
        view are not refused by the Celery guard either.
        """
        token = _ADMIN_SCOPE.set(True)
        try:
            yield
        finally:
            _ADMIN_SCOPE.reset(token)

    @staticmethod
    def acting_as_admin() -> bool:
        """True inside `admin_bypass`."""
        return _ADMIN_SCOPE.get()

    def refusal(
        self, operation: str | None, status: MaintenanceStatus | None = None
    ) -> MaintenanceActive:
        """The `MaintenanceActive` for ``operation`` under ``status`` (default: current)."""
        status = status or self._snapshot.status
        if operation is not None and operation in self.catalog:
            message = self.catalog.info(operation).message
        else:
            message = status.message or "This operation is unavailable during maintenance."
        now = self.now()
        return MaintenanceActive(
            operation,
            status.mode.value if status.mode else "",
            message,
            status.retry_after(now, self.settings.default_retry_after),
            status,
        )

    def current(self) -> MaintenanceStatus:
        """The in-memory state (no I/O, no job count); expired auto-end reads as inactive."""
        snap = self._snapshot
        if snap.end_at is not None and self.now() >= snap.end_at:
            return replace(INACTIVE, version=snap.status.version, generation=snap.status.generation)
        return snap.status

    def now(self) -> float:
        """Epoch seconds on Redis' clock: this process's clock corrected by the offset
        measured at each poll (so a process whose clock is off decides times as the
        fleet does). Memory only."""
        return self._clock() + self._clock_offset

    @property
    def state_known(self) -> bool:
        """False until the state has been read from the store at least once."""
        return self._snapshot.known

    # ------------------------------------------------------------------ admin

    def status(self, *, with_jobs: bool = True) -> MaintenanceStatus:
        """The current state, with the live in-flight job count when the store answers.

        Reads the store if no background watcher keeps this process up to date.
        """
        if not self._watching:
            self.refresh()
        status = self.current()
        if with_jobs:
            try:
                status = status.with_jobs(self.store.count_inflight(self.now()))
            except StoreUnavailable as exc:
                self._note_store_error(exc)
        return status

    def enable(
        self,
        mode: MaintenanceMode | str = MaintenanceMode.NORMAL,
        reason: str = "",
        duration: int | str | None = None,
        by: str | None = None,
        *,
        auto_end: bool = False,
        operations: Iterable[str | Operation] | None = None,
    ) -> MaintenanceStatus:
        """Switch maintenance on (or change its mode) for the whole fleet.

        ``duration`` (seconds or text like ``1h30m``) sets the announced end; with
        ``auto_end`` maintenance ends by itself then. ``operations`` narrows what normal
        mode blocks. Returns the new state once written; this process sees it at once.
        Start and end times come from Redis' clock.
        """
        return self.write_enabled(
            mode, reason, duration, by, auto_end=auto_end, operations=operations
        )

    def write_enabled(
        self,
        mode: MaintenanceMode | str,
        reason: str,
        duration: int | str | None = None,
        by: str | None = None,
        *,
        auto_end: bool = False,
        operations: Iterable[str | Operation] | None = None,
        emergency_id: str | None = None,
        check: StateCheck | None = None,
    ) -> MaintenanceStatus:
        """`enable` for services built on the guard: ``emergency_id`` marks the state as
        owned by that emergency run (None keeps the id of a running emergency when the
        mode stays emergency); ``check(old)`` may raise to refuse the change (it is
        called with the state the compare-and-set is based on)."""
        parsed_mode = MaintenanceMode.parse(mode)
        clean = clean_reason(reason)
        seconds = None if duration is None else parse_duration(duration)
        actor = clean_actor(by)
        if auto_end and seconds is None:
            raise InvalidInput("auto_end needs a duration")
        requested: tuple[str, ...] = ()
        if operations is not None:
            if isinstance(operations, str):
                raise InvalidInput("operations must be a list of operation names")
            requested = tuple(dict.fromkeys(self.catalog.require(op) for op in operations))
            if not requested:
                raise InvalidInput("operations must name at least one operation")
            if parsed_mode is MaintenanceMode.EMERGENCY:
                raise InvalidInput("emergency mode blocks every operation; omit operations")

        def make_new(old: MaintenanceStatus | None) -> MaintenanceStatus:
            owner = emergency_id
            if owner is None:
                keep = old is not None and old.mode is MaintenanceMode.EMERGENCY
                owner = old.emergency_id if keep and old is not None else ""
            if parsed_mode is not MaintenanceMode.EMERGENCY:
                owner = ""
            same_mode = old is not None and old.mode is parsed_mode
            return MaintenanceStatus(
                mode=parsed_mode,
                reason=clean,
                estimated_duration=seconds,
                enabled_by=actor,
                auto_end=auto_end,
                blocked_operations=requested,
                emergency_id=owner,
                # A drain's hold stays while the mode does (an update keeps it).
                hold_queued=same_mode and old is not None and old.hold_queued,
            )

        def make_event(old: MaintenanceStatus | None) -> dict[str, str]:
            if old is None or not old.is_active:
                kind = "enabled"
            else:
                kind = "mode_changed" if old.mode is not parsed_mode else "updated"
            return event_fields(
                kind,
                actor=actor,
                reason=clean,
                at=SERVER_TIME,
                mode=parsed_mode.value,
                previous_mode=old.mode.value if old and old.mode else "",
                duration=seconds,
                auto_end=auto_end,
                operations=list(requested) or None,
                emergency=emergency_id or None,
            )

        # the store logs the audit event (events.log_audit_event)
        return self.change_state(make_new, make_event, check=check)

    def disable(self, by: str | None = None, reason: str = "") -> MaintenanceStatus:
        """Switch maintenance off for the whole fleet; a no-op if it is already off."""
        actor = clean_actor(by)
        note = clean_note(reason)
        previous: list[MaintenanceMode | None] = []

        def disabled_event(old: MaintenanceStatus | None) -> dict[str, str]:
            previous.append(old.mode if old else None)
            return event_fields(
                "disabled",
                actor=actor,
                reason=note,
                at=SERVER_TIME,
                previous_mode=old.mode.value if old and old.mode else "",
            )

        status = self.change_state(
            lambda old: INACTIVE,
            disabled_event,
            skip_if=lambda old: old is None or not old.is_active,
        )
        if previous and previous[-1] is MaintenanceMode.EMERGENCY:
            from .emergency import after_disable

            # Workers consume again, terminated jobs left no in-flight records; warns if not.
            after_disable(self, actor)
        return status

    def emergency(
        self,
        reason: str,
        grace_period: int | str = 30,
        kill_after: int | str = 10,
        by: str | None = None,
        *,
        celery_app: Any = None,
        sessions: Any = None,
        wait: bool = True,
        progress: Callable[[str, float, float, int], None] | None = None,
    ) -> Any:
        """Emergency maintenance: refuse everything now, pause the workers, let running
        jobs finish within ``grace_period`` seconds, then terminate and record the rest.

        Returns an `EmergencyReport`; see `maintenance_guard.emergency.run_emergency`
        (blocking unless ``wait=False``). Raises `InvalidInput` before changing anything.
        """
        from .emergency import run_emergency

        return run_emergency(
            self,
            reason,
            grace_period,
            kill_after,
            by,
            celery_app=celery_app,
            sessions=sessions,
            wait=wait,
            progress=progress,
        )

    def attempt_counts(self) -> dict[str, Any]:
        """Fleet-wide attempt counters, nested {kind: {operation: {surface: n}}}.

        Flushes this process's buffer first. Raises `StoreUnavailable`.
        """
        from .events import summarise_counts

        self.flush()
        return summarise_counts(self.store.read_attempt_counts())

    def events(self, limit: int = 50, since: float | None = None) -> list[AuditEvent]:
        """The audit log, newest first. Raises `StoreUnavailable`."""
        if not 1 <= limit <= 10_000:
            raise InvalidInput("limit must be between 1 and 10000")
        return self.store.read_events(limit=limit, since=since)

    def drain(
        self,
        timeout: float = 300.0,
        operations: Iterable[str | Operation] | None = None,
        *,
        queued: str = "hold",
        celery_app: Any = None,
        by: str | None = None,
    ) -> Any:
        """Wait until no tracked job (of ``operations``) is in flight and no blocked
        message published before maintenance can start; returns a
        `maintenance_guard.drain.DrainResult` (``drained`` False on timeout). See
        `maintenance_guard.drain.drain` for the ``queued`` policies."""
        from .drain import drain

        names = None if operations is None else [str(op) for op in operations]
        return drain(self, timeout, names, queued=queued, celery_app=celery_app, by=by)

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(status)`` from the watcher thread after every state change."""
        self._listeners.append(listener)
        self.start()

    def remove_listener(self, listener: ChangeListener) -> None:
        """Stop calling ``listener``."""
        try:
            self._listeners.remove(listener)
        except ValueError:
            pass

    def add_periodic(self, task: PeriodicTask, every: float) -> None:
        """Call ``task()`` from the watcher thread about every ``every`` seconds (after a
        poll; at most once a poll). Exceptions are logged, never raised."""
        self._periodic.append([task, every, 0.0])
        self.start()

    # ------------------------------------------------------------------ sync

    def refresh(self, *, raise_errors: bool = False) -> MaintenanceStatus:
        """Read the state from the store now. On failure keep the last known state
        (or raise `StoreUnavailable` if ``raise_errors``)."""
        read_at = self._installs
        try:
            stored = self.store.load_state()
        except StoreUnavailable as exc:
            self._note_store_error(exc)
            if raise_errors:
                raise
            return self._snapshot.status
        if stored is None:
            if self._snapshot.known and self._snapshot.status.is_active:
                self._restore_lost_state()
                return self._snapshot.status
            stored = INACTIVE
        self._install(stored, read_at)
        return self._snapshot.status

    def start(self) -> None:
        """Start the background watcher (idempotent; done lazily by the checks)."""
        if self._watching:
            return
        with self._start_lock:
            if self._watching:
                return
            self._stop_event.clear()
            thread = threading.Thread(
                target=self._watch, name="maintenance-guard-watcher", daemon=True
            )
            self._watching = True
            self._thread = thread
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the watcher, flush buffered counters and records, and say so in this
        process's presence record (a validation report tells a clean exit from a crash)."""
        self._stop_event.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        was_watching = self._watching
        self._watching = False
        self._thread = None
        self.flush()
        if was_watching or self._recorder.total:
            self._record_presence(exited=True)

    def flush(self) -> None:
        """Write buffered attempt counters and test records to the store now.

        On return, everything recorded before the call is in the store (unless it is
        unreachable): a flush running on the watcher thread is waited for.
        """
        with self._flush_lock:
            counts, records = self._recorder.take()
            if not counts and not records:
                return
            try:
                self.store.record_attempts(counts, [r.to_fields() for r in records])
            except StoreUnavailable as exc:
                self._recorder.put_back(counts, records)
                self._note_store_error(exc)
                return
            self._recorder.note_flushed(len(records))

    # ------------------------------------------------------------------ internals

    def _reset_process_state(self) -> None:
        self._recorder = AttemptRecorder()
        self._flush_lock = threading.Lock()
        self._install_lock = threading.Lock()
        self._installs = 0
        self._start_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._watching = False
        self._thread = None

    def _unknown_snapshot(self) -> _Snapshot:
        if self.settings.on_store_error == "closed":
            status = MaintenanceStatus(mode=MaintenanceMode.NORMAL, reason=UNKNOWN_STATE_REASON)
            return self._snapshot_of(status, known=False)
        return self._snapshot_of(INACTIVE, known=False)

    def _normal_blocked(self, requested: tuple[str, ...]) -> frozenset[str]:
        known = tuple(op for op in requested if op in self.catalog)
        if known:
            return frozenset(known)
        if self.settings.blocked_operations is not None:
            return frozenset(self.settings.blocked_operations)
        return frozenset(self.catalog.high_risk())

    def _snapshot_of(self, status: MaintenanceStatus, *, known: bool = True) -> _Snapshot:
        normal_blocked = self._normal_blocked(status.blocked_operations)
        if status.mode is MaintenanceMode.NORMAL:
            blocked = normal_blocked
        else:
            blocked = blocked_operations_for(status.mode, self.catalog)
        ordered = tuple(op for op in self.catalog.names() if op in blocked)
        status = replace(status, blocked_operations=ordered)
        end_at = status.estimated_completion if status.auto_end else None
        return _Snapshot(status, blocked, normal_blocked, end_at, known)

    def _install(self, stored: MaintenanceStatus, read_at: int | None = None) -> None:
        """Swap in ``stored``; ``read_at`` is `_installs` when the read was issued."""
        if read_at is None:
            read_at = self._installs
        with self._install_lock:
            old = self._snapshot
            same_history = stored.generation == old.status.generation
            if (
                old.known
                and same_history
                and stored.version == old.status.version
                and stored.mode == old.mode
            ):
                return
            if (
                old.known
                and same_history
                and stored.version < old.status.version
                and read_at < self._installs
            ):
                # A read that raced a newer install (watcher vs. admin call): installing it
                # would move this process back in time. A lower version read after the last
                # install, or one of another history (the store restarted empty), is real.
                return
            self._snapshot = self._snapshot_of(stored)
            self._installs += 1
        if old.known and self._snapshot.stamp != old.stamp:
            for listener in list(self._listeners):
                try:
                    listener(self._snapshot.status)
                except Exception:  # a listener must not stop the watcher
                    logger.exception("maintenance-guard change listener failed")

    def change_state(
        self,
        make_new: Callable[[MaintenanceStatus | None], MaintenanceStatus],
        make_event: Callable[[MaintenanceStatus | None], dict[str, str]],
        *,
        skip_if: Callable[[MaintenanceStatus | None], bool] | None = None,
        check: StateCheck | None = None,
    ) -> MaintenanceStatus:
        """Compare-and-set the stored state: ``make_new(old)`` and ``make_event(old)`` are
        built from the state read just before the write, retried if another change lands
        in between. ``started_at`` and ``changed_at`` are stamped with Redis' clock.
        Returns the current state as this process now sees it."""
        for _attempt in range(20):
            read_at = self._installs
            old = self.store.load_state()
            if skip_if is not None and skip_if(old):
                if old is not None:
                    self._install(old, read_at)
                return self.current()
            if check is not None:
                check(old)
            expected = old.version if old is not None else 0
            new = make_new(old)
            fields = dict(new.to_fields())
            fields["changed_at"] = SERVER_TIME
            if new.mode is not None and new.started_at is None:
                fields["started_at"] = SERVER_TIME
            try:
                stored = self.store.change_state(fields, make_event(old), expected)
            except ConcurrentChange:
                continue
            self._install(stored, read_at)
            return self.current()
        raise ConcurrentChange("the maintenance state kept changing; try again")

    def _restore_lost_state(self) -> None:
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
            self._note_store_error(exc)
            return
        if stored is not None:
            self._install(stored)

    def _auto_end(self) -> None:
        snap = self._snapshot
        if snap.end_at is None:
            return
        event = event_fields(
            "auto_ended",
            actor="maintenance-guard",
            reason="the announced end time passed (auto_end)",
            at=SERVER_TIME,
            previous_mode=snap.mode.value if snap.mode else "",
        )
        fields = dict(INACTIVE.to_fields())
        fields["changed_at"] = SERVER_TIME
        try:
            # Redis' clock decides: a process whose clock runs ahead cannot end it early.
            stored = self.store.change_state(
                fields, event, expected_version=snap.status.version, not_before=snap.end_at
            )
        except ChangeTooEarly:
            return  # this process's clock estimate was a little ahead; try at the next poll
        except ConcurrentChange:
            self.refresh()  # another process ended or changed it first
            return
        except StoreUnavailable as exc:
            self._note_store_error(exc)
            return
        self._install(stored)

    def _watch(self) -> None:
        subscription = None
        interval = self.settings.poll_interval
        next_poll = 0.0
        next_auto_end = 0.0
        stop = self._stop_event
        while not stop.is_set():
            now = time.monotonic()
            if subscription is None:
                try:
                    subscription = self.store.subscribe()
                    next_poll = 0.0  # we may have missed messages while unsubscribed
                except StoreUnavailable as exc:
                    self._note_store_error(exc)
                    stop.wait(min(interval, 0.5))
            stamp: StateStamp | None = None
            if subscription is not None:
                try:
                    stamp = subscription.wait(max(0.0, min(next_poll - now, interval)))
                except StoreUnavailable as exc:
                    self._note_store_error(exc)
                    subscription.close()
                    subscription = None
                    continue
            if stop.is_set():
                break
            if stamp is not None and stamp != self._snapshot.stamp:
                self.refresh()
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + interval
                self._poll()
                self.flush()
                self._run_periodic()
            snap = self._snapshot
            if (
                snap.end_at is not None
                and self.now() >= snap.end_at
                and time.monotonic() >= next_auto_end
            ):
                next_auto_end = time.monotonic() + min(interval, 0.2)
                self._auto_end()
        if subscription is not None:
            subscription.close()

    def _poll(self) -> None:
        """One round trip: the stored stamp, Redis' clock (to correct this process's
        clock by) and this process's presence record."""
        sent = self._clock()
        try:
            result = self.store.poll(_presence_member(), self._presence_fields(sent))
        except StoreUnavailable as exc:
            self._note_store_error(exc)
            return
        received = self._clock()
        self._correct_clock(sent, received, result.server_time)
        snap = self._snapshot
        if result.stamp is None:
            if snap.known and snap.status.is_active:
                self._restore_lost_state()
            elif not snap.known or snap.status.generation:
                self.refresh()  # never read, or the store restarted empty
        elif result.stamp != snap.stamp or not snap.known:
            self.refresh()

    def _correct_clock(self, sent: float, received: float, server_time: float) -> None:
        """Offset to Redis' clock from the reading with the shortest round trip among the
        last few (its error is at most half that round trip); none within that error."""
        rtt = received - sent
        if rtt > MAX_CLOCK_SAMPLE_RTT:
            return
        self._clock_samples.append((rtt, server_time - (sent + received) / 2))
        best_rtt, offset = min(self._clock_samples)
        self._clock_offset = 0.0 if abs(offset) <= best_rtt / 2 + CLOCK_TOLERANCE else offset

    def _run_periodic(self) -> None:
        now = time.monotonic()
        for entry in list(self._periodic):
            task, every, due = entry
            if now < due:
                continue
            entry[2] = now + every
            try:
                task()
            except Exception:  # a periodic task must not stop the watcher
                logger.exception("maintenance-guard periodic task failed")

    def _presence_fields(self, now: float, *, exited: bool = False) -> dict[str, object]:
        snap = self._snapshot
        fields: dict[str, object] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "role": self.role,
            "version": snap.status.version if snap.known else None,
            "generation": snap.status.generation if snap.known else None,
            "mode": snap.status.mode.value if snap.status.mode else None,
            "seen_at": now + self._clock_offset,
            "poll_interval": self.settings.poll_interval,
            "recorded": self._recorder.total,
            "flushed": self._recorder.flushed,
        }
        if exited:
            fields["exited"] = True
        return fields

    def _record_presence(self, *, exited: bool = False) -> None:
        # The watcher's poll writes this once a poll (see `_poll`); a validation report
        # tells from it which version each live process has seen and whether a process
        # that ended flushed its records first (see validation.py).
        try:
            self.store.record_presence(
                _presence_member(), self._presence_fields(self._clock(), exited=exited)
            )
        except StoreUnavailable as exc:
            self._note_store_error(exc)

    def _note_store_error(self, exc: Exception) -> None:
        self.store_errors += 1
        now = time.monotonic()
        if now - self._last_error_log >= 30:
            self._last_error_log = now
            logger.warning(
                "maintenance state store unreachable; enforcing the last known state: %s",
                exc,
                extra={"mg_event": "store_error", "mg_errors": self.store_errors},
            )


def _presence_member() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _default_role() -> str:
    path = sys.argv[0] if sys.argv and sys.argv[0] else ""
    name = os.path.basename(path)
    if name == "__main__.py":  # python -m celery: name the package, not its __main__
        name = os.path.basename(os.path.dirname(path))
    return name or "python"


def _flush_at_exit(ref: weakref.ReferenceType[MaintenanceGuard]) -> None:
    guard = ref()
    if guard is None or not (guard._watching or guard._recorder.total):
        return
    # Not `stop()`: joining the watcher could hold the exit up to a poll interval.
    guard._stop_event.set()
    guard.flush()
    guard._record_presence(exited=True)


def _after_fork(ref: weakref.ReferenceType[MaintenanceGuard]) -> None:
    guard = ref()
    if guard is not None:
        # Threads do not survive fork; the child starts its own watcher lazily, and
        # drops the parent's unflushed counters so they are not counted twice.
        guard._reset_process_state()
