"""`run_emergency`: switch to emergency, pause this app's workers, grace period, revoke.

Only the jobs running when the emergency began can be terminated, and only while this
emergency owns the state: switched off (or to another mode), the run stops at once and
terminates nothing. No Celery import here: the app is driven through its remote control
(`fleet.CeleryFleet`); the worker side is `maintenance_guard.celery.emergency`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..changes import Enabling
from ..errors import EmergencyInProgress, InvalidInput, StoreUnavailable
from ..inflight import InflightRegistry
from ..inputs import validate_emergency_args
from ..modes import MaintenanceMode
from .audit import audit, warn
from .fleet import CMD_RUNNING, POLL_INTERVAL, CeleryFleet, fleet_of, held_back_ids, presence_by_pid
from .records import FINISHED_PHASES, EmergencyRecords, EmergencyReport, QueueSpec
from .revocation import finish, terminate
from .setup import setup_of, watch_deactivation

if TYPE_CHECKING:
    from ..guard import MaintenanceGuard
    from ..sessions import SessionInvalidator
    from ..status import MaintenanceStatus

logger = logging.getLogger("maintenance_guard")

# How long the run waits for the workers that answered to record their pause.
PAUSE_CONFIRM_SECONDS = 5.0
# A run that owns the state but has stored no report yet is starting (or died at once).
STARTING_RUN_SECONDS = 60.0

EmergencyProgress = Callable[[str, float, float, int], None]
"""``progress(phase, elapsed, total, jobs_left)``; phases: grace, terminating, killing."""


def run_emergency(
    guard: MaintenanceGuard,
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
    """Emergency: refuse everything now, pause the workers, grace period, then revoke.

    Only the jobs running when the emergency began can be terminated, and only while
    this emergency lasts: switched off (or to another mode) before the end of the grace
    period, it stops at once, resumes the workers and terminates nothing
    (``report.called_off``). Blocks for the grace period plus up to ``kill_after`` (and
    a few seconds) when ``wait``; with ``wait=False`` it returns after the switch, the
    session invalidation and the consumer pause, and finishes in a background thread (the
    stored report, `build_report`, shows the outcome). ``sessions=False`` skips session
    invalidation; None uses the guard's configured invalidator. Raises `InvalidInput`
    (nothing changed), `EmergencyInProgress` while another emergency run is under way,
    and `StoreUnavailable`.
    """
    clean, grace, kill, actor = validate_emergency_args(reason, grace_period, kill_after, by)
    if sessions is True:
        raise InvalidInput("sessions must be a SessionInvalidator, None or False")
    records = EmergencyRecords(guard.store)
    setup = setup_of(guard)
    app = celery_app if celery_app is not None else setup.celery_app
    invalidator = setup.sessions if sessions is None else sessions or None
    report = EmergencyReport(
        id=uuid.uuid4().hex[:12],
        reason=clean,
        by=actor,
        activated_at=guard.now(),
        grace_period=grace,
        kill_after=kill,
    )
    # What earlier emergencies left paused: not this run's doing (see EmergencyRun.pause).
    paused_before = records.cancelled()
    request = Enabling.parse(
        guard.catalog, MaintenanceMode.EMERGENCY, clean, None, actor, emergency_id=report.id
    )
    status = guard.change_state(
        request.new_state,
        request.event,
        check=lambda old: _refuse_a_second_run(guard, records, old),
    )
    watch_deactivation(guard)
    report.activated_at = status.started_at or report.activated_at
    records.start(report)
    audit(guard, "emergency_activated", actor, clean, emergency=report.id, grace_period=grace)
    run = EmergencyRun(guard, records, report, app, _safe_progress(progress), paused_before)
    run.pause()
    if invalidator is not None and not run.is_called_off():
        try:
            result = invalidator.invalidate_non_admin()
            report.sessions = result.to_dict()
            audit(guard, "sessions_invalidated", actor, clean, **result.to_dict())
        except StoreUnavailable as exc:
            warn(guard, report, f"sessions could not be invalidated: {exc}")
    records.save_report(report)
    if wait or run.done:
        return run.finish_grace_and_revoke()
    thread = threading.Thread(
        target=run.finish_logged, name="maintenance-guard-emergency", daemon=True
    )
    thread.start()
    return report


def _refuse_a_second_run(
    guard: MaintenanceGuard, records: EmergencyRecords, old: MaintenanceStatus | None
) -> None:
    """Raise `EmergencyInProgress` if an emergency run owns the state and is not done."""
    if old is None or old.mode is not MaintenanceMode.EMERGENCY or not old.emergency_id:
        return
    stored = records.report()
    if stored is not None and stored.get("id") == old.emergency_id:
        if stored.get("phase") in FINISHED_PHASES:
            return
        raise EmergencyInProgress(
            f"emergency {old.emergency_id} (by {stored.get('by')}) is still running "
            f"(phase {stored.get('phase')}); wait for its report (maintenance-guard report) "
            "or disable maintenance first"
        )
    # Its run won the switch but has not stored its report yet, or died right after.
    if old.changed_at is not None and guard.now() - old.changed_at < STARTING_RUN_SECONDS:
        raise EmergencyInProgress(
            f"emergency {old.emergency_id} is starting; wait for its report or disable "
            "maintenance first"
        )


class EmergencyRun:
    """One emergency run after the switch: pause, grace period, revocation, report.

    Every step first checks that this emergency still owns the state (read from Redis):
    once it is switched off or to another mode, the run resumes what it paused, stops,
    and terminates nothing.
    """

    def __init__(
        self,
        guard: MaintenanceGuard,
        records: EmergencyRecords,
        report: EmergencyReport,
        app: Any,
        progress: EmergencyProgress | None,
        paused_before: dict[str, list[QueueSpec]] | None = None,
    ) -> None:
        self.guard = guard
        self.paused_before = paused_before or {}
        self.records = records
        self.report = report
        self.app = app
        self.progress = progress
        self.registry = InflightRegistry(guard.store, guard.settings.heartbeat_timeout, guard.now)
        self.fleet: CeleryFleet | None = None
        self.start_jobs: dict[str, dict[str, Any]] = {}
        self.done = False

    # --- called off ---

    def is_called_off(self) -> bool:
        """True once the state is no longer this emergency (read from the store)."""
        status = self.guard.refresh()
        owned = status.mode is MaintenanceMode.EMERGENCY and status.emergency_id == self.report.id
        if owned or self.report.called_off is not None:
            return not owned
        by = ""
        try:
            by = self.guard.events(limit=1)[0].actor
        except (StoreUnavailable, IndexError):
            pass
        self.report.called_off = {
            "at": self.guard.now(),
            "mode": status.mode.value if status.mode else None,
            "by": by,
        }
        warn(
            self.guard,
            self.report,
            f"called off (maintenance is now {status.mode.value if status.mode else 'off'}"
            f"{', by ' + by if by else ''}) before any job was terminated: nothing was killed",
        )
        return True

    def _stop_called_off(self) -> EmergencyReport:
        # The workers resume by themselves on the change (emergency_worker.ConsumerGate).
        self.report.phase = "called_off"
        self.done = True
        return finish(self.guard, self.records, self.report)

    # --- steps ---

    def pause(self) -> None:
        """Stop this app's workers consuming (recorded first, so a worker or a `disable`
        racing the pause resumes it), and note the jobs running now."""
        report = self.report
        if self.app is None:
            warn(
                self.guard, report, "no Celery app given: workers were not paused, jobs not revoked"
            )
            self._finish_without_fleet()
            return
        try:
            self.fleet, others = fleet_of(self.guard, self.app)
            self._pause_fleet(self.fleet, others)
        except StoreUnavailable:
            raise
        except Exception as exc:  # the broker is down: the switch itself already holds
            logger.exception("cannot reach the Celery workers")
            warn(self.guard, report, f"cannot reach the Celery workers ({exc}); nothing revoked")
            self.fleet = None
            self._finish_without_fleet()
            return
        if self.is_called_off():
            self._stop_called_off()

    def _finish_without_fleet(self) -> None:
        self.done = True
        if self.is_called_off():
            self.report.phase = "called_off"
        finish(self.guard, self.records, self.report)

    def _pause_fleet(self, fleet: CeleryFleet, others: dict[str, dict[str, Any]]) -> None:
        report = self.report
        for worker, info in sorted(others.items()):
            report.unreachable.append({"worker": worker, "why": "another broker", **_brief(info)})
            warn(
                self.guard,
                report,
                f"worker {worker} is registered under this key prefix but uses another broker "
                f"({info.get('broker')}); run the emergency through that app too",
            )
        answered = fleet.ping()
        report.workers = sorted(answered)
        presence = presence_by_pid(self.guard)
        registered = self.registry.workers()
        for worker in sorted(set(fleet.workers) - answered):
            info = registered.get(worker, {})
            seen = presence.get(str(info.get("pid")))
            ago = f"{self.guard.now() - seen:.0f}s ago" if seen else "unknown"
            report.unreachable.append({"worker": worker, "why": "no answer", "last_seen": seen})
            warn(
                self.guard,
                report,
                f"worker {worker} is registered but did not answer (hung, stopped or dead; "
                f"last seen {ago}): it was not paused and its jobs could not be stopped",
            )
        if not answered:
            if not fleet.workers:
                warn(
                    self.guard,
                    report,
                    "no Celery worker answered: none of this app is registered under this "
                    "key prefix (install() connects a worker's hooks)",
                )
            return
        # Each worker pauses itself on the change (emergency_worker.ConsumerGate) and
        # records it; the run only waits for the records, so nothing here can race a
        # `disable` into leaving a worker paused.
        deadline = time.monotonic() + PAUSE_CONFIRM_SECONDS
        while True:
            recorded = self.records.cancelled()
            waiting = [w for w in answered if w not in recorded]
            if not waiting or time.monotonic() >= deadline or self.is_called_off():
                break
            time.sleep(POLL_INTERVAL)
        for worker in sorted(answered):
            if worker in recorded:
                earlier = {q.name for q in self.paused_before.get(worker, [])}
                report.consumers_cancelled[worker] = [
                    q.name for q in recorded[worker] if q.name not in earlier
                ]
        for worker in sorted(answered - set(report.consumers_cancelled)):
            warn(
                self.guard, report, f"worker {worker} did not list its queues; it may still consume"
            )
        audit(
            self.guard,
            "consumers_cancelled",
            report.by,
            report.reason,
            emergency=report.id,
            workers=report.consumers_cancelled,
        )
        self.start_jobs = fleet.active(sorted(answered))
        report.running_at_start = len(self.start_jobs)
        silent = set(fleet.workers) - answered
        for job in self.registry.jobs():
            if job.worker in silent:
                report.running_at_start += 1
                report.not_stopped.append(
                    {
                        "id": job.id,
                        "name": job.name,
                        "worker": job.worker,
                        "pid": job.pid,
                        "why": "its worker did not answer",
                    }  # fmt: skip
                )
        if not self.start_jobs and answered:
            # Distinguish "nothing runs" from "workers without the emergency hooks".
            replied = set(fleet._call(CMD_RUNNING, sorted(answered), task_ids=[]))
            for worker in sorted(answered - replied):
                warn(
                    self.guard,
                    report,
                    f"worker {worker} lacks the maintenance-guard hooks (install())",
                )

    def finish_logged(self) -> None:
        """`finish_grace_and_revoke` for a background thread: logs instead of raising."""
        try:
            self.finish_grace_and_revoke()
        except Exception:
            logger.exception("emergency revocation failed", extra={"mg_event": "emergency_failed"})

    def finish_grace_and_revoke(self) -> EmergencyReport:
        """Grace period, then terminate what still runs of the jobs that ran at the start."""
        if self.done:
            return self.report
        fleet = self.fleet
        assert fleet is not None
        report = self.report
        workers = report.workers
        left = dict(self.start_jobs)
        began = time.monotonic()
        deadline = began + report.grace_period
        while left:
            now = time.monotonic()
            if self.progress is not None:
                self.progress(
                    "grace", min(now - began, report.grace_period), report.grace_period, len(left)
                )
            if now >= deadline:
                break
            time.sleep(min(0.2, max(0.0, deadline - now)))
            if self.is_called_off():
                self._note_finished(left)
                return self._stop_called_off()
            current = fleet.active(workers)
            silent = set(workers) - fleet.last_replied
            left = {i: j for i, j in left.items() if i in current or j.get("worker") in silent}
        report.grace_ended_at = self.guard.now()
        self._note_finished(left)
        if left and self.is_called_off():
            return self._stop_called_off()
        if not left:
            report.all_gone_at = report.grace_ended_at
            self.done = True
            return finish(self.guard, self.records, report)
        self._terminate(fleet, left)
        self.done = True
        return finish(self.guard, self.records, report)

    def _terminate(self, fleet: CeleryFleet, left: dict[str, dict[str, Any]]) -> None:
        terminate(self.guard, self.records, self.report, fleet, left, self.progress)

    def _note_finished(self, left: dict[str, dict[str, Any]]) -> None:
        report = self.report
        gone = [
            {"id": i, "name": j.get("name"), "worker": j.get("worker")}
            for i, j in self.start_jobs.items()
            if i not in left
        ]
        held = held_back_ids(self.guard, self.app, [str(g["id"]) for g in gone])
        report.held_back = [g for g in gone if g["id"] in held]
        report.finished_in_grace = [g for g in gone if g["id"] not in held]


def _brief(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info[k] for k in ("broker", "pid") if k in info}


def _safe_progress(progress: EmergencyProgress | None) -> EmergencyProgress | None:
    if progress is None:
        return None
    callback = progress

    def call(phase: str, elapsed: float, total: float, left: int) -> None:
        try:
            callback(phase, elapsed, total, left)
        except Exception:  # a broken progress display must not stop the revocation
            logger.exception("emergency progress callback failed")

    return call
