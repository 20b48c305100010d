"""`Planning`: the guard's methods for planned work (queue pauses, scheduled windows,
progress updates, and the refusal of work that would still run when a window opens).

A mixin of `MaintenanceGuard`, so the guard module stays the state and the hot path;
each method delegates to its service (pausing.py, scheduling.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from .errors import MaintenanceActive, MaintenanceUpcoming
from .pauses import PauseResult, QueuePause
from .pausing import pause_queues, resume_queues
from .scheduling import WindowSchedule, post_update
from .status import MaintenanceStatus
from .windows import describe_wait, refusing_window

if TYPE_CHECKING:
    from .guard import MaintenanceGuard


class Planning:
    """Queue pauses, scheduled windows and progress updates (see the module docstring)."""

    def pause_queues(
        self,
        queues: Iterable[str],
        *,
        reason: str,
        by: str | None = None,
        duration: int | str | None = None,
        workers: Iterable[str] | None = None,
        beat: bool = False,
    ) -> PauseResult:
        """Stop this app's workers (or the ``workers`` named) consuming ``queues`` until
        resumed or ``duration`` ends; with ``beat``, beat skips their entries. Messages
        stay in the broker. See `maintenance_guard.pausing`."""
        return pause_queues(
            _guard(self),
            queues,
            reason=reason,
            by=by,
            duration=duration,
            workers=workers,
            beat=beat,
        )

    def resume_queues(
        self,
        queues: Iterable[str] | None = None,
        *,
        everything: bool = False,
        by: str | None = None,
    ) -> tuple[str, ...]:
        """End the pauses of ``queues`` (or all); returns the queues resumed."""
        return resume_queues(_guard(self), queues, everything=everything, by=by)

    def paused_queues(self) -> tuple[QueuePause, ...]:
        """The queue pauses in effect now."""
        guard = _guard(self)
        return guard.status(with_jobs=False).pauses(guard.now())

    @property
    def windows(self) -> WindowSchedule:
        """Scheduled maintenance windows: ``add``, ``list``, ``upcoming``, ``cancel``,
        ``reschedule`` (see `maintenance_guard.scheduling.WindowSchedule`)."""
        return WindowSchedule(_guard(self))

    def post_update(self, text: str, by: str | None = None) -> MaintenanceStatus:
        """Append a progress note to the maintenance under way (the status page shows
        them as a timeline). Raises `InvalidInput` when maintenance is off."""
        return post_update(_guard(self), text, by)

    def check_before_window(
        self,
        operation: str | None,
        expected_runtime: float | None,
        *,
        is_admin: bool = False,
        surface: str = "python",
    ) -> None:
        """Raise `MaintenanceUpcoming` if a job of ``operation`` submitted now would still
        be running when a scheduled window that blocks it opens (``expected_runtime``
        seconds), or the window's drain period has begun. Memory only."""
        guard = _guard(self)
        windows = guard.snapshot.status.windows
        if not windows or is_admin or guard.acting_as_admin():
            return
        now = guard.now()
        window = refusing_window(windows, operation, expected_runtime, now)
        if window is None:
            return
        guard.recorder.count(surface, operation, kind="before_window")
        refusal: MaintenanceActive = guard.refusal(operation)
        raise MaintenanceUpcoming(
            operation,
            window.mode,
            f"{refusal.message} Not now: {describe_wait(window, expected_runtime, now)}.",
            max(1, int(window.end_at - now)),
            guard.snapshot.status,
            window_id=window.id,
            run_after=window.end_at,
        )


def _guard(planning: Planning) -> MaintenanceGuard:
    return cast("MaintenanceGuard", planning)
