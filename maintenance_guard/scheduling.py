"""Scheduled maintenance windows and progress updates, the service built on the guard
(`MaintenanceGuard.windows`, `MaintenanceGuard.post_update`), and the watcher's step that
announces and starts windows on time.

Every change is a compare-and-set of the shared state, so two admins scheduling at once
cannot create overlapping windows, and of the processes that all see a window due, the
first to write starts it and the others find it gone. Times are decided by Redis' clock
(``not_before``): a process whose clock runs ahead cannot start a window early.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from .changes import Enabling, Scheduling, Updating, check_window_fits
from .errors import ChangeTooEarly, ConcurrentChange, InvalidInput, StoreUnavailable
from .modes import MaintenanceMode, Operation
from .status import INACTIVE, MaintenanceStatus
from .store import SERVER_TIME, event_fields
from .windows import MaintenanceWindow, iso_z, parse_when, upcoming, with_holding

if TYPE_CHECKING:
    from .guard import MaintenanceGuard
    from .state import GuardState


class WindowSchedule:
    """``guard.windows``: schedule, list, cancel and reschedule maintenance windows."""

    def __init__(self, guard: MaintenanceGuard) -> None:
        self.guard = guard

    def add(
        self,
        at: object,
        duration: int | str,
        *,
        reason: str,
        mode: MaintenanceMode | str = MaintenanceMode.NORMAL,
        notice: int | str | None = None,
        auto_end: bool = False,
        operations: Iterable[str | Operation] | None = None,
        drain_before: int | str | None = None,
        by: str | None = None,
    ) -> MaintenanceWindow:
        """Schedule maintenance at ``at`` (ISO 8601 with a zone, or an aware datetime)
        for ``duration``; announced ``notice`` before (default: at once), new blocked
        work stopped ``drain_before`` before. Raises `InvalidInput` (bad input, a time
        in the past, an overlap with another window) without changing anything."""
        guard = self.guard
        settings_blocked = guard.settings.blocked_operations
        request = Scheduling.parse(
            guard.catalog,
            settings_blocked if settings_blocked is not None else guard.catalog.high_risk(),
            at,
            duration,
            mode,
            reason,
            notice=notice,
            auto_end=auto_end,
            operations=operations,
            drain_before=drain_before,
            by=by,
        )
        window = request.window(uuid.uuid4().hex[:8])
        # Its notice time has passed already: announced with this change, not after it.
        window = replace(window, announced=window.is_announced(guard.now()))

        def make_new(old: MaintenanceStatus | None) -> MaintenanceStatus:
            base = old or INACTIVE
            check_window_fits(window, base.windows, guard.now())
            return replace(base, windows=(*base.windows, window))

        guard.change_state(make_new, lambda old: request.event(window), keep_shared=False)
        return window

    def list(self) -> tuple[MaintenanceWindow, ...]:
        """The scheduled windows, soonest first (reads the store if no watcher runs)."""
        windows = self.guard.status(with_jobs=False).windows
        return tuple(sorted(windows, key=lambda w: w.start_at))

    def upcoming(self) -> MaintenanceWindow | None:
        """The next announced window that has not started."""
        return upcoming(self.list(), self.guard.now())

    def cancel(self, window_id: str, by: str | None = None) -> MaintenanceWindow:
        """Cancel a window that has not started; raises `InvalidInput` if there is none
        with that id. Work deferred until after it may run at once."""
        return self._edit(window_id, None, "window_cancelled", by)

    def reschedule(self, window_id: str, at: object, by: str | None = None) -> MaintenanceWindow:
        """Move a window that has not started to ``at`` (same duration and settings; its
        announcement is made again from the new notice time)."""
        start = parse_when(at, what="start time")
        return self._edit(window_id, start, "window_rescheduled", by)

    def _edit(
        self, window_id: str, start: float | None, kind: str, by: str | None
    ) -> MaintenanceWindow:
        """Move the window to ``start``, or remove it (None); one audited change."""
        done: list[MaintenanceWindow] = []

        def make_new(old: MaintenanceStatus | None) -> MaintenanceStatus:
            base = old or INACTIVE
            window = self._find(base, window_id)
            if start is None:
                done[:] = [window]
                return replace(base, windows=tuple(w for w in base.windows if w.id != window_id))
            window = replace(window, start_at=start)
            window = replace(window, announced=window.is_announced(self.guard.now()))
            check_window_fits(window, base.windows, self.guard.now())
            done[:] = [window]
            windows = tuple(window if w.id == window_id else w for w in base.windows)
            return replace(base, windows=windows)

        def make_event(old: MaintenanceStatus | None) -> dict[str, str]:
            return event_fields(
                kind, actor=by or "unknown", window=window_id, start=iso_z(done[0].start_at)
            )

        self.guard.change_state(make_new, make_event, keep_shared=False)
        return done[0]

    def hold_deferred_work(self, window_id: str) -> None:
        """Mark ``window_id`` as holding work deferred until after it: parked work is not
        replayed until the window has ended (or is cancelled)."""

        def make_new(old: MaintenanceStatus | None) -> MaintenanceStatus:
            base = old or INACTIVE
            return replace(base, windows=with_holding(base.windows, window_id))

        def already(old: MaintenanceStatus | None) -> bool:
            return old is None or not any(
                w.id == window_id and not w.holds_deferred for w in old.windows
            )

        self.guard.change_state(
            make_new,
            lambda old: event_fields("window_holds_deferred", actor="maintenance-guard",
                                     window=window_id),
            skip_if=already,
            keep_shared=False,
        )  # fmt: skip

    @staticmethod
    def _find(status: MaintenanceStatus, window_id: str) -> MaintenanceWindow:
        for window in status.windows:
            if window.id == window_id:
                return window
        raise InvalidInput(f"no scheduled window {window_id!r} (see `schedule list`)")


def post_update(guard: MaintenanceGuard, text: str, by: str | None = None) -> MaintenanceStatus:
    """Append a progress note to the maintenance under way (shown on the status page's
    timeline, live). Raises `InvalidInput` when maintenance is off."""
    request = Updating.parse(text, by)

    def check(old: MaintenanceStatus | None) -> None:
        if old is None or not old.is_active:
            raise InvalidInput("maintenance is off: there is nothing to post an update to")

    return guard.change_state(
        lambda old: replace(old or INACTIVE, updates=request.apply(old.updates if old else (),
                                                                    guard.now())),
        lambda old: request.event(),
        check=check,
    )  # fmt: skip


def advance_windows(state: GuardState) -> None:
    """The watcher's step when a window is due: start it (or drop it if it was missed
    whole), or announce it. At most one change per call; the loop calls again."""
    status = state.snapshot.status
    before = state.snapshot.window
    now = state.now()
    due = sorted((w for w in status.windows if now >= w.start_at), key=lambda w: w.start_at)
    if due:
        fields, event, not_before = _start_fields(status, due[0], now)
    else:
        waiting = [w for w in status.windows if w.notice and not w.announced]
        ready = [w for w in waiting if now >= w.announce_at]
        if not ready:
            return
        window = min(ready, key=lambda w: w.announce_at)
        windows = tuple(replace(w, announced=True) if w.id == window.id else w
                        for w in status.windows)  # fmt: skip
        fields = {"windows": replace(status, windows=windows).to_fields()["windows"]}
        event = _window_event("window_announced", window)
        not_before = window.announce_at
    try:
        stored = state.store.change_state(
            fields, event, expected_version=status.version, not_before=not_before
        )
    except ChangeTooEarly:
        return  # this process's clock estimate ran a little ahead; the next poll retries
    except ConcurrentChange:
        state.refresh()  # another process did it (or changed something) first
        return
    except StoreUnavailable as exc:
        state.note_store_error(exc)
        return
    state.install(stored)
    if state.snapshot.window != before:
        state.flush(windows=True)  # the window's start, recorded now (tally.py)


def _start_fields(
    status: MaintenanceStatus, window: MaintenanceWindow, now: float
) -> tuple[dict[str, str], dict[str, str], float]:
    others = tuple(w for w in status.windows if w.id != window.id)
    if now >= window.end_at:  # every process was down for the whole window
        fields = {"windows": replace(status, windows=others).to_fields()["windows"]}
        event = _window_event("window_missed", window)
        return fields, event, window.end_at
    request = Enabling(
        mode=MaintenanceMode(window.mode),
        reason=window.reason,
        # Started late (no process was up at its start): it still ends when announced.
        duration=max(1, math.ceil(window.end_at - max(now, window.start_at))),
        actor=window.by,
        auto_end=window.auto_end,
        operations=window.operations,
    )
    old = status if status.is_active else None
    new = replace(request.new_state(old), paused_queues=status.paused_queues, windows=others)
    fields = dict(new.to_fields())
    fields["started_at"] = fields["changed_at"] = SERVER_TIME
    if new.opened_at is None:
        fields["opened_at"] = SERVER_TIME
    event = {**request.event(old), "window": window.id}
    return fields, event, window.start_at


def _window_event(kind: str, window: MaintenanceWindow) -> dict[str, str]:
    return event_fields(
        kind,
        actor="maintenance-guard",
        reason=window.reason,
        at=SERVER_TIME,
        window=window.id,
        start=iso_z(window.start_at),
    )
