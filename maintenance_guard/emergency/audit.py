"""Audit events and warnings of an emergency (a failed write is logged, never raised)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import StoreUnavailable
from ..store import event_fields
from .records import EmergencyReport

if TYPE_CHECKING:
    from ..guard import MaintenanceGuard

logger = logging.getLogger("maintenance_guard")


def audit(guard: MaintenanceGuard, type_: str, actor: str, reason: str, **extra: Any) -> None:
    try:
        guard.store.append_event(event_fields(type_, actor=actor, reason=reason, **extra))
    except StoreUnavailable as exc:
        logger.warning(
            "cannot write audit event %s (%s): %s", type_, reason, exc, extra={"mg_event": type_}
        )


def warn(guard: MaintenanceGuard, report: EmergencyReport | None, message: str) -> None:
    if report is not None:
        report.warnings.append(message)
    audit(guard, "emergency_warning", "maintenance-guard", message)
