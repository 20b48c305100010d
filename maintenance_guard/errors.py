"""The one exception hierarchy of maintenance-guard."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .status import MaintenanceStatus


class MaintenanceGuardError(Exception):
    """Root of every exception this package raises."""


class InvalidInput(MaintenanceGuardError, ValueError):
    """A caller passed a value the guard refuses (bad mode, reason, duration, ...)."""


class UnknownOperation(InvalidInput):
    """An operation name that is not in the catalog."""


class StoreUnavailable(MaintenanceGuardError):
    """The shared state store (Redis) could not be reached or answered with an error."""


class ConcurrentChange(MaintenanceGuardError):
    """A compare-and-set on the state lost to another change."""


class EmergencyInProgress(ConcurrentChange):
    """An emergency run is under way; a second one is refused until it is done."""


class ChangeTooEarly(ConcurrentChange):
    """A timed change (an auto-end) was refused: Redis' clock says its time has not come."""


class MaintenanceActive(MaintenanceGuardError):
    """Raised when maintenance refuses an operation; the one exception callers catch.

    Carries ``operation``, ``mode``, ``message``, ``retry_after`` (seconds, >= 1) and
    the ``status`` the decision was made on.
    """

    def __init__(
        self,
        operation: str | None,
        mode: str,
        message: str,
        retry_after: int,
        status: MaintenanceStatus,
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.mode = mode
        self.message = message
        self.retry_after = retry_after
        self.status = status

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Celery pickles exceptions across processes; keep every field.
        return (
            type(self),
            (self.operation, self.mode, self.message, self.retry_after, self.status),
        )

    def to_dict(self) -> dict[str, object]:
        """The JSON body used for refused HTTP requests."""
        return {
            "error": "maintenance_active",
            "operation": self.operation,
            "mode": self.mode,
            "message": self.message,
            "retry_after": self.retry_after,
        }


class DeferralUnconfirmed(MaintenanceActive):
    """Maintenance refused a submission and parking it for later could not be confirmed.

    The write to the store timed out and may still land. ``task_id`` is the id it was
    parked under: submitting again with the same ``task_id`` is safe (a parked id is
    stored once, and this process checks the id before publishing it after maintenance).
    """

    def __init__(
        self,
        operation: str | None,
        mode: str,
        message: str,
        retry_after: int,
        status: MaintenanceStatus,
        task_id: str = "",
    ) -> None:
        super().__init__(operation, mode, message, retry_after, status)
        self.task_id = task_id

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (
            type(self),
            (self.operation, self.mode, self.message, self.retry_after, self.status, self.task_id),
        )


class MaintenanceUpcoming(MaintenanceActive):
    """Refused before a scheduled window: the job would still be running when the window
    opens (its ``expected_runtime``), or the window's drain period has begun.
    ``window_id`` names the window, ``run_after`` (epoch seconds) is when it ends."""

    def __init__(
        self,
        operation: str | None,
        mode: str,
        message: str,
        retry_after: int,
        status: MaintenanceStatus,
        *,
        window_id: str = "",
        run_after: float = 0.0,
    ) -> None:
        super().__init__(operation, mode, message, retry_after, status)
        self.window_id = window_id
        self.run_after = run_after

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (
            _rebuild_upcoming,
            (self.operation, self.mode, self.message, self.retry_after, self.status,
             self.window_id, self.run_after),
        )  # fmt: skip


def _rebuild_upcoming(*args: object) -> MaintenanceUpcoming:
    *head, window_id, run_after = args
    return MaintenanceUpcoming(*head, window_id=window_id, run_after=run_after)  # type: ignore[arg-type]
