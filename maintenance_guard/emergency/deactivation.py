"""The checks once an emergency ends: every paused worker consumes again, no in-flight
record of a terminated job remains, the recorded jobs match the report."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..inflight import InflightRegistry
from .audit import audit, warn
from .fleet import POLL_INTERVAL
from .records import FINISHED_PHASES, EmergencyRecords

if TYPE_CHECKING:
    from ..guard import MaintenanceGuard

logger = logging.getLogger("maintenance_guard")

RESUME_TIMEOUT = 5.0


def after_disable(
    guard: MaintenanceGuard, actor: str, *, timeout: float = RESUME_TIMEOUT
) -> dict[str, Any]:
    """Checks once an emergency ends; warnings go to the audit log and the log.

    Waits up to ``timeout`` for every paused worker to say it consumes again (workers
    resume by themselves on the change) and for the run to finish, and checks that no
    in-flight record of a terminated job remains and that the recorded jobs match the
    report. Never raises.
    """
    try:
        return _after_disable(guard, actor, timeout)
    except Exception as exc:  # deactivation itself already succeeded
        logger.exception("emergency deactivation checks failed")
        return {"ok": False, "warnings": [f"checks failed: {exc}"]}


def _after_disable(guard: MaintenanceGuard, actor: str, timeout: float) -> dict[str, Any]:
    records = EmergencyRecords(guard.store)
    warnings: list[str] = []
    # The paused workers resume by themselves on the change; wait for them to say so.
    cancelled = records.cancelled()
    deadline = time.monotonic() + timeout
    while True:
        still = records.cancelled()
        waiting = sorted(w for w, qs in cancelled.items() if qs and still.get(w))
        report = records.report()
        running = report is not None and report.get("phase") not in FINISHED_PHASES
        if (not waiting and not running) or time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL)
    for worker in waiting:
        warnings.append(
            f"worker {worker} does not consume again (queues: "
            f"{', '.join(q.name for q in cancelled[worker])})"
        )

    terminated = records.terminated()
    terminated_ids = {j.id for j in terminated}
    registry = InflightRegistry(guard.store, guard.settings.heartbeat_timeout, guard.now)
    leftover = sorted(terminated_ids & {j.id for j in registry.jobs()})
    if leftover:
        registry.finish(leftover)
        warnings.append(
            f"in-flight records of terminated jobs remained (removed): {', '.join(leftover)}"
        )

    if report is not None:
        if report.get("phase") not in FINISHED_PHASES:
            warnings.append(
                f"the emergency's revocation had not finished (phase {report.get('phase')})"
            )
        reported = {j["id"] for j in report.get("terminated", [])}
        reported |= {j["id"] for j in report.get("not_stopped", [])}
        mine = {j.id for j in terminated if j.emergency_id == report.get("id")}
        if reported != mine:
            warnings.append(
                "recorded jobs do not match the terminated ones: "
                f"missing records {sorted(reported - mine)}, unexpected {sorted(mine - reported)}"
            )
    checks = {
        "ok": not warnings,
        "at": time.time(),
        "by": actor,
        "workers_resumed": sorted(records.resumed()),
        "warnings": warnings,
    }
    records.save_checks(checks)
    for message in warnings:
        warn(guard, None, message)
    audit(
        guard,
        "emergency_checks",
        actor,
        "deactivation checks",
        ok=not warnings,
        warnings=len(warnings),
    )
    return checks
