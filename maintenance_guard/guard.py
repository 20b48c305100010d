"""`MaintenanceGuard`: the state, the hot-path checks, enable and disable.

Each process keeps the last state in memory, an immutable `Snapshot` swapped in whole;
`is_blocked` and `check` read only that. A `StateWatcher` thread keeps it fresh (see
watcher.py). Services built on the guard (emergency runs, drain, queue pauses, deferred
work) live in their own modules; `emergency()`, `drain()` and `pause_queues()` delegate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .changes import Disabling, Enabling
from .embedded import resolve_url
from .errors import ConcurrentChange, InvalidInput, MaintenanceActive, StoreUnavailable
from .events import AttemptRecorder, summarise_counts
from .impact import WindowImpact, read_impact
from .modes import MaintenanceMode, Operation, OperationCatalog, decide
from .planning import Planning
from .settings import GuardSettings
from .state import Clock, GuardState
from .status import INACTIVE, MaintenanceStatus
from .store import SERVER_TIME, AuditEvent, RedisStore, StateStore
from .tally import minute_of, window_of
from .watcher import StateWatcher

if TYPE_CHECKING:
    from .drain import DrainResult
    from .emergency import EmergencyProgress, EmergencyReport
    from .sessions import SessionInvalidator

logger = logging.getLogger("maintenance_guard")

StateCheck = Callable[[MaintenanceStatus | None], None]
# Called in the disabling process after a successful disable: (guard, previous, actor).
DeactivationHook = Callable[["MaintenanceGuard", MaintenanceStatus, str], None]

# Set while the current request/task acts for an admin (see `MaintenanceGuard.admin_bypass`).
_ADMIN_SCOPE: ContextVar[bool] = ContextVar("maintenance_guard_admin_scope", default=False)


class MaintenanceGuard(GuardState, Planning):
    """The fleet-wide maintenance switch and the checks every adapter calls.

    Thread-safe. `is_blocked` and `check` never touch the network and never raise a
    store error; `enable`/`disable` raise `StoreUnavailable` if Redis cannot be reached
    and `InvalidInput` (a `ValueError`) for bad arguments, changing nothing.
    """

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
        self._deactivation_hooks: list[DeactivationHook] = []
        super().__init__(store, settings, catalog=catalog, clock=clock)

    @classmethod
    def from_url(cls, url: str | None = None, **settings: Any) -> MaintenanceGuard:
        """A guard on the Redis at ``url``; None means ``$MAINTENANCE_GUARD_REDIS_URL``,
        else the embedded server (started if needed). ``settings`` are `GuardSettings` fields.
        """
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
            self.recorder.record(
                surface,
                name,
                target=target,
                user=user,
                would_block_normal=decision.would_block_normal and not normal_exempt,
                would_block_emergency=decision.would_block_emergency,
                window=snap.window,
                minute=minute_of(self.now()),
            )
            return
        if decision.blocked:
            self.recorder.count(
                surface, name, window=snap.window, user=user, minute=minute_of(self.now())
            )
            raise self.refusal(name, snap.status)

    def note_admin_attempt(self, surface: str, operation: str | None) -> None:
        """Count an attempt maintenance let through because an admin made it (counter
        kind ``admin``; memory only, flushed with the other counters)."""
        if self._snapshot.status.mode is not None:
            self.recorder.count(surface, operation, kind="admin")

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
        view are not refused by the Celery guard either (they carry a signed stamp).
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
        return MaintenanceActive(
            operation,
            status.mode.value if status.mode else "",
            message,
            status.retry_after(self.now(), self.settings.default_retry_after),
            status,
        )

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
                self.note_store_error(exc)
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
        request = Enabling.parse(
            self.catalog, mode, reason, duration, by, auto_end=auto_end, operations=operations
        )
        return self.change_state(request.new_state, request.event)

    def disable(self, by: str | None = None, reason: str = "") -> MaintenanceStatus:
        """Switch maintenance off for the whole fleet; a no-op if it is already off.

        After a real change, this process's deactivation hooks run (the emergency's
        checks, see `add_deactivation_hook`)."""
        request = Disabling.parse(by, reason)
        previous: list[MaintenanceStatus] = []

        def make_event(old: MaintenanceStatus | None) -> dict[str, str]:
            previous[:] = [old] if old is not None else []
            return request.event(old)

        status = self.change_state(
            lambda old: INACTIVE,
            make_event,
            skip_if=lambda old: old is None or not old.is_active,
        )
        for hook in list(self._deactivation_hooks) if previous else ():
            try:
                hook(self, previous[0], request.actor)
            except Exception:  # the switch itself succeeded
                logger.exception("maintenance-guard deactivation hook failed")
        return status

    def change_state(
        self,
        make_new: Callable[[MaintenanceStatus | None], MaintenanceStatus],
        make_event: Callable[[MaintenanceStatus | None], dict[str, str]],
        *,
        skip_if: Callable[[MaintenanceStatus | None], bool] | None = None,
        check: StateCheck | None = None,
        keep_shared: bool = True,
    ) -> MaintenanceStatus:
        """Compare-and-set the stored state: ``make_new(old)`` and ``make_event(old)`` are
        built from the state read just before the write, retried if another change lands
        in between; ``check(old)`` may raise to refuse it. ``changed_at`` (and
        ``started_at`` when ``make_new`` leaves it None) are stamped with Redis' clock.
        Queue pauses and scheduled windows stay as they were unless ``keep_shared`` is
        False (a change of those). Returns the current state as this process now sees it."""
        for _attempt in range(20):
            read_at = self._installs
            old = self.store.load_state()
            if skip_if is not None and skip_if(old):
                if old is not None:
                    self.install(old, read_at)
                return self.current()
            if check is not None:
                check(old)
            new = make_new(old)
            if keep_shared and old is not None:
                new = replace(new, paused_queues=old.paused_queues, windows=old.windows)
            fields = dict(new.to_fields())
            fields["changed_at"] = SERVER_TIME
            if new.mode is not None and new.started_at is None:
                fields["started_at"] = SERVER_TIME
            if new.mode is not None and new.opened_at is None:
                fields["opened_at"] = SERVER_TIME
            expected = old.version if old is not None else 0
            try:
                stored = self.store.change_state(fields, make_event(old), expected)
            except ConcurrentChange:
                continue
            self.install(stored, read_at)
            if window_of(stored) != (None if old is None else window_of(old)):
                self.flush(windows=True)  # the window's start or end, recorded now
            return self.current()
        raise ConcurrentChange("the maintenance state kept changing; try again")

    def emergency(
        self,
        reason: str,
        grace_period: int | str = 30,
        kill_after: int | str = 10,
        by: str | None = None,
        *,
        celery_app: Any = None,
        sessions: SessionInvalidator | None | bool = None,
        wait: bool = True,
        progress: EmergencyProgress | None = None,
    ) -> EmergencyReport:
        """Emergency maintenance: refuse everything now, pause the workers, let running
        jobs finish within ``grace_period`` seconds, then terminate and record the rest.

        Delegates to `maintenance_guard.emergency.run_emergency` (blocking unless
        ``wait=False``). Raises `InvalidInput` before changing anything.
        """
        # The emergency service is built on the guard (it imports this module only for
        # types): imported here, so the core does not load it until it is used.
        from .emergency import run_emergency

        return run_emergency(self, reason, grace_period, kill_after, by, celery_app=celery_app,
                             sessions=sessions, wait=wait, progress=progress)  # fmt: skip

    def drain(
        self,
        timeout: float = 300.0,
        operations: Iterable[str | Operation] | None = None,
        *,
        queued: str = "hold",
        celery_app: Any = None,
        by: str | None = None,
    ) -> DrainResult:
        """Wait until no tracked job (of ``operations``) is in flight and no blocked
        message published before maintenance can start; a `DrainResult` (``drained``
        False on timeout). See `maintenance_guard.drain.drain` for the policies."""
        from .drain import drain  # a service built on the guard, as `emergency` above

        names = None if operations is None else [str(op) for op in operations]
        return drain(self, timeout, names, queued=queued, celery_app=celery_app, by=by)

    def attempt_counts(self) -> dict[str, Any]:
        """Fleet-wide attempt counters, nested {kind: {operation: {surface: n}}}.

        Flushes this process's buffer first. Raises `StoreUnavailable`.
        """
        self.flush()
        return summarise_counts(self.store.read_attempt_counts())

    def impact(self, window: str | None = None) -> WindowImpact | None:
        """The user impact of maintenance window ``window`` (default: the one under way,
        else the last one); None if there is none. Flushes this process's buffer first.
        Raises `StoreUnavailable`."""
        self.flush()
        return read_impact(self.store, window, status=self.current(), now=self.now())

    def events(self, limit: int = 50, since: float | None = None) -> list[AuditEvent]:
        """The audit log, newest first. Raises `StoreUnavailable`."""
        if not 1 <= limit <= 10_000:
            raise InvalidInput("limit must be between 1 and 10000")
        return self.store.read_events(limit=limit, since=since)

    # ------------------------------------------------------------------ hooks

    def add_deactivation_hook(self, hook: DeactivationHook) -> None:
        """Call ``hook(guard, previous_state, actor)`` in this process after each of its
        own `disable` calls that switched maintenance off (once per hook)."""
        if hook not in self._deactivation_hooks:
            self._deactivation_hooks.append(hook)
