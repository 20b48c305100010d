"""What the emergencies of a guard drive (its Celery app, its sessions), and the
deactivation checks that run when this process disables an emergency."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..modes import MaintenanceMode
from .deactivation import after_disable

if TYPE_CHECKING:
    from ..guard import MaintenanceGuard
    from ..sessions import SessionInvalidator
    from ..status import MaintenanceStatus


@dataclass
class EmergencySetup:
    """What the emergencies of one guard drive: the Celery app whose workers are paused
    and revoked, and the sessions invalidated. Set by the adapters (`install`,
    `FlaskMaintenance`) or by `configure_celery`/`configure_sessions`."""

    celery_app: Any = None
    sessions: SessionInvalidator | None = None


_SETUPS: weakref.WeakKeyDictionary[MaintenanceGuard, EmergencySetup] = weakref.WeakKeyDictionary()


def setup_of(guard: MaintenanceGuard) -> EmergencySetup:
    """The `EmergencySetup` of ``guard`` (empty until configured)."""
    found = _SETUPS.get(guard)
    if found is None:
        found = _SETUPS[guard] = EmergencySetup()
    return found


def configure_sessions(guard: MaintenanceGuard, invalidator: SessionInvalidator | None) -> None:
    """Make every emergency of ``guard`` invalidate the non-admin sessions of ``invalidator``."""
    setup_of(guard).sessions = invalidator
    watch_deactivation(guard)


def configure_celery(guard: MaintenanceGuard, app: Any) -> None:
    """Make every emergency (and deactivation) of ``guard`` drive the workers of ``app``."""
    setup_of(guard).celery_app = app
    watch_deactivation(guard)


def watch_deactivation(guard: MaintenanceGuard) -> None:
    """Run the deactivation checks (`after_disable`) whenever this process disables an
    emergency through ``guard``. The adapters and `run_emergency` call it; a process
    that only disables (a script) can call it, or `after_disable`, itself."""
    guard.add_deactivation_hook(_check_after_emergency)


def _check_after_emergency(
    guard: MaintenanceGuard, previous: MaintenanceStatus, actor: str
) -> None:
    if previous.mode is MaintenanceMode.EMERGENCY:
        # Workers consume again, terminated jobs left no in-flight records; warns if not.
        after_disable(guard, actor)
