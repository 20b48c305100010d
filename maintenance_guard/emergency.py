"""Emergency mode: pause the fleet, grace period, revocation, terminated-job records, recovery.

`run_emergency` (behind `MaintenanceGuard.emergency`) switches to EMERGENCY at once,
invalidates non-admin sessions, stops every worker consuming (Celery remote control,
recorded so the workers consume again when maintenance ends), gives running jobs the
grace period, then revokes the rest with SIGTERM and SIGKILLs what still runs after
``kill_after``. Every terminated job is recorded in Redis; `recover` re-enqueues the
recoverable ones exactly once; `after_disable` checks the fleet when maintenance ends.
No Celery import here: the Celery app is passed in and driven through ``app.control``;
the worker side lives in `emergency_worker`, the Redis records in `emergency_records`,
the report in `emergency_report`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .emergency_records import (
    EmergencyRecords,
    EmergencyReport,
    QueueSpec,
    TerminatedJob,
    json_safe,
)
from .emergency_report import EmergencyOverview, build_report, render_report_text
from .errors import InvalidInput, StoreUnavailable
from .inputs import MAX_GRACE_SECONDS, clean_actor, clean_reason, parse_duration
from .modes import MaintenanceMode
from .store import event_fields

if TYPE_CHECKING:
    from .guard import MaintenanceGuard
    from .sessions import SessionInvalidator

logger = logging.getLogger("maintenance_guard")

__all__ = [
    "CeleryFleet",
    "EmergencyOverview",
    "EmergencyRecords",
    "EmergencyReport",
    "QueueSpec",
    "RecoveryResult",
    "TerminatedJob",
    "after_disable",
    "build_report",
    "configure_celery",
    "configure_sessions",
    "json_safe",
    "recover",
    "render_report_text",
    "run_emergency",
    "validate_emergency_args",
]

MAX_KILL_AFTER = 600
POLL_INTERVAL = 0.05
REPLY_TIMEOUT = 1.0
# After SIGKILL a process is gone within milliseconds; this only bounds a stuck worker.
AFTER_KILL_WAIT = 3.0
RESUME_TIMEOUT = 5.0

# Worker remote-control commands registered by `emergency_worker.register_commands`.
CMD_ACTIVE = "maintenance_guard_active"
CMD_RUNNING = "maintenance_guard_running"
CMD_KILL = "maintenance_guard_kill"

EmergencyProgress = Callable[[str, float, float, int], None]
"""``progress(phase, elapsed, total, jobs_left)``; phases: grace, terminating, killing."""


# ---------------------------------------------------------------------------- the fleet


class CeleryFleet:
    """Talks to the workers of one Celery app through its remote control."""

    def __init__(self, app: Any, timeout: float = REPLY_TIMEOUT) -> None:
        self.app = app
        self.timeout = timeout
        # Workers that answered the last command: a silent one's jobs count as running.
        self.last_replied: set[str] = set()

    def _gather(self, replies: list[dict[str, Any]] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for reply in replies or []:
            out.update(reply)
        return out

    def _call(self, command: str, workers: list[str] | None, **arguments: Any) -> dict[str, Any]:
        replies = self._gather(
            self.app.control.broadcast(
                command,
                arguments=arguments,
                destination=workers,
                reply=True,
                timeout=self.timeout,
                limit=len(workers) if workers else None,
            )
        )
        self.last_replied = set(replies)
        return replies

    def workers(self, expected: int | None = None) -> list[str]:
        """Hostnames of the workers that answer a ping; returns as soon as ``expected``
        workers answered (else after the reply timeout)."""
        replies = self.app.control.ping(timeout=self.timeout, limit=expected or None)
        return sorted(self._gather(replies))

    def active_queues(self, workers: list[str]) -> dict[str, list[QueueSpec]]:
        """Worker -> the queues it consumes."""
        replies = self._call("active_queues", workers)
        return {w: [QueueSpec.from_celery(q) for q in qs or []] for w, qs in replies.items()}

    def cancel_consumer(self, worker: str, queue: str) -> bool:
        """Stop ``worker`` consuming ``queue``; True if it confirmed."""
        replies = self._gather(
            self.app.control.cancel_consumer(
                queue, destination=[worker], reply=True, timeout=self.timeout, limit=1
            )
        )
        return worker in replies

    def add_consumer(self, worker: str, queue: QueueSpec) -> bool:
        """Make ``worker`` consume ``queue`` again; True if it confirmed."""
        replies = self._gather(
            self.app.control.add_consumer(
                queue.name,
                exchange=queue.exchange or None,
                exchange_type=queue.exchange_type,
                routing_key=queue.routing_key or None,
                destination=[worker],
                reply=True,
                timeout=self.timeout,
                limit=1,
            )
        )
        return worker in replies

    def active(self, workers: list[str]) -> dict[str, dict[str, Any]]:
        """Task id -> job info for every job running on ``workers``."""
        jobs: dict[str, dict[str, Any]] = {}
        for worker, reply in self._call(CMD_ACTIVE, workers).items():
            for job in (reply or {}).get("jobs", []):
                jobs[job["id"]] = {**job, "worker": worker}
        return jobs

    def running(self, workers: list[str], ids: list[str]) -> dict[str, int]:
        """Which of ``ids`` still run in a pool process: id -> pid."""
        found: dict[str, int] = {}
        for reply in self._call(CMD_RUNNING, workers, task_ids=ids).values():
            found.update((reply or {}).get("running", {}))
        return found

    def kill(self, workers: list[str], ids: list[str]) -> dict[str, int]:
        """SIGKILL the pool processes still running ``ids``: id -> pid killed."""
        killed: dict[str, int] = {}
        for reply in self._call(CMD_KILL, workers, task_ids=ids).values():
            killed.update((reply or {}).get("killed", {}))
        return killed

    def revoke(self, ids: list[str], signal: str) -> None:
        """Revoke ``ids`` on every worker, terminating their processes with ``signal``."""
        self.app.control.revoke(ids, terminate=True, signal=signal)


# ---------------------------------------------------------------------------- activation


def validate_emergency_args(
    reason: object, grace_period: object, kill_after: object, by: object
) -> tuple[str, int, int, str]:
    """Clean the arguments of an emergency; raise `InvalidInput` before anything changes."""
    clean = clean_reason(reason)
    grace = parse_duration(
        grace_period, what="grace period", maximum=MAX_GRACE_SECONDS, allow_zero=True
    )
    kill = parse_duration(kill_after, what="kill_after", maximum=MAX_KILL_AFTER, allow_zero=True)
    return clean, grace, kill, clean_actor(by)


def configure_sessions(guard: MaintenanceGuard, invalidator: SessionInvalidator | None) -> None:
    """Make every emergency of ``guard`` invalidate the non-admin sessions of ``invalidator``."""
    guard.session_invalidator = invalidator


def configure_celery(guard: MaintenanceGuard, app: Any) -> None:
    """Make every emergency (and deactivation) of ``guard`` drive the workers of ``app``."""
    guard.celery_app = app


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

    Blocks for the grace period plus up to ``kill_after`` (and a few seconds) when
    ``wait``; with ``wait=False`` it returns after the switch, the session invalidation
    and the consumer pause, and finishes in a background thread (the stored report,
    `build_report`, shows the outcome). ``sessions=False`` skips session invalidation;
    None uses the guard's configured invalidator. Raises `InvalidInput` (nothing changed)
    and `StoreUnavailable`.
    """
    clean, grace, kill, actor = validate_emergency_args(reason, grace_period, kill_after, by)
    if sessions is True:
        raise InvalidInput("sessions must be a SessionInvalidator, None or False")
    records = EmergencyRecords(guard.store)
    app = celery_app if celery_app is not None else guard.celery_app
    invalidator = guard.session_invalidator if sessions is None else sessions or None

    guard.enable(MaintenanceMode.EMERGENCY, reason=clean, by=actor)
    report = EmergencyReport(
        id=uuid.uuid4().hex[:12],
        reason=clean,
        by=actor,
        activated_at=time.time(),
        grace_period=grace,
        kill_after=kill,
    )
    records.start(report)
    _audit(guard, "emergency_activated", actor, clean, emergency=report.id, grace_period=grace)

    progress = _safe_progress(progress)
    fleet = CeleryFleet(app) if app is not None else None
    start_jobs: dict[str, dict[str, Any]] = {}
    if fleet is None:
        _warn(guard, report, "no Celery app given: workers were not paused, jobs not revoked")
    else:
        try:
            # Pause first: the broker keeps what is queued while sessions are cleared.
            start_jobs = _pause_fleet(guard, fleet, records, report)
        except Exception as exc:  # the broker is down: the switch itself already holds
            logger.exception("cannot reach the Celery workers")
            _warn(guard, report, f"cannot reach the Celery workers ({exc}); nothing revoked")
            fleet = None
    if invalidator is not None:
        try:
            result = invalidator.invalidate_non_admin()
            report.sessions = result.to_dict()
            _audit(guard, "sessions_invalidated", actor, clean, **result.to_dict())
        except StoreUnavailable as exc:
            _warn(guard, report, f"sessions could not be invalidated: {exc}")
    records.save_report(report)

    if fleet is None:
        return _finish(guard, records, report)
    if wait:
        return _grace_and_revoke(guard, fleet, records, report, start_jobs, progress)
    thread = threading.Thread(
        target=_grace_and_revoke_logged,
        args=(guard, fleet, records, report, start_jobs, progress),
        name="maintenance-guard-emergency",
        daemon=True,
    )
    thread.start()
    return report


def _registered_workers(guard: MaintenanceGuard) -> int | None:
    """How many workers registered themselves (`install`), to stop waiting for pings."""
    from .inflight import InflightRegistry

    try:
        return len(InflightRegistry(guard.store).workers()) or None
    except (StoreUnavailable, InvalidInput):
        return None


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


def _pause_fleet(
    guard: MaintenanceGuard, fleet: CeleryFleet, records: EmergencyRecords, report: EmergencyReport
) -> dict[str, dict[str, Any]]:
    report.workers = fleet.workers(_registered_workers(guard))
    records.forget_workers(sorted(set(records.cancelled()) - set(report.workers)))
    if not report.workers:
        _warn(guard, report, "no Celery worker answered: nothing to pause or revoke")
        return {}
    for worker, queues in fleet.active_queues(report.workers).items():
        stopped = [q for q in queues if fleet.cancel_consumer(worker, q.name)]
        records.set_cancelled(worker, stopped)
        report.consumers_cancelled[worker] = [q.name for q in stopped]
        for q in queues:
            if q not in stopped:
                _warn(
                    guard, report, f"worker {worker} did not confirm it stopped consuming {q.name}"
                )
    missing = set(report.workers) - set(report.consumers_cancelled)
    for worker in sorted(missing):
        _warn(guard, report, f"worker {worker} did not list its queues; it may still consume")
    _audit(
        guard,
        "consumers_cancelled",
        report.by,
        report.reason,
        emergency=report.id,
        workers=report.consumers_cancelled,
    )
    jobs = fleet.active(report.workers)
    hooked = {j["worker"] for j in jobs.values()}
    report.running_at_start = len(jobs)
    if not jobs and report.workers:
        # Distinguish "nothing runs" from "workers without the emergency hooks".
        answered = set(fleet._call(CMD_RUNNING, report.workers, task_ids=[]))
        for worker in sorted(set(report.workers) - answered - hooked):
            _warn(guard, report, f"worker {worker} lacks the maintenance-guard hooks (install())")
    return jobs


def _grace_and_revoke_logged(*args: Any) -> None:
    try:
        _grace_and_revoke(*args)
    except Exception:
        logger.exception("emergency revocation failed", extra={"mg_event": "emergency_failed"})


def _grace_and_revoke(
    guard: MaintenanceGuard,
    fleet: CeleryFleet,
    records: EmergencyRecords,
    report: EmergencyReport,
    start_jobs: dict[str, dict[str, Any]],
    progress: EmergencyProgress | None,
) -> EmergencyReport:
    workers = report.workers
    seen = dict(start_jobs)
    began = time.monotonic()
    deadline = began + report.grace_period
    left = dict(start_jobs)
    while left:
        now = time.monotonic()
        if progress is not None:
            progress("grace", min(now - began, report.grace_period), report.grace_period, len(left))
        if now >= deadline:
            break
        time.sleep(min(0.2, max(0.0, deadline - now)))
        current = fleet.active(workers)
        silent = set(workers) - fleet.last_replied
        current.update({i: j for i, j in left.items() if j.get("worker") in silent})
        seen.update(current)
        left = current
    report.grace_ended_at = time.time()
    report.finished_in_grace = [
        {"id": i, "name": j.get("name"), "worker": j.get("worker")}
        for i, j in seen.items()
        if i not in left
    ]
    if not left:
        report.all_gone_at = report.grace_ended_at
        return _finish(guard, records, report)

    ids = sorted(left)
    report.phase = "terminating"
    pending = {i: _terminated_record(guard, fleet, report, left[i], "SIGTERM", None) for i in ids}
    # Recorded before the revoke: a worker restarted meanwhile must already refuse them.
    records.add_terminated(list(pending.values()))
    records.save_report(report)
    fleet.revoke(ids, "SIGTERM")
    _audit(
        guard,
        "jobs_revoked",
        report.by,
        report.reason,
        emergency=report.id,
        signal="SIGTERM",
        jobs=ids,
    )

    gone_at: dict[str, float] = {}
    owners = {i: left[i].get("worker", "") for i in ids}
    still = _wait_gone(
        fleet, workers, ids, owners, report.kill_after, gone_at, progress, "terminating"
    )
    if still:
        report.phase = "killing"
        killed = fleet.kill(workers, sorted(still))
        _audit(
            guard,
            "jobs_killed",
            report.by,
            report.reason,
            emergency=report.id,
            signal="SIGKILL",
            jobs=sorted(killed),
        )
        for job_id in killed:
            pending[job_id] = _replace(pending[job_id], signal="SIGKILL")
        still = _wait_gone(
            fleet, workers, sorted(still), owners, AFTER_KILL_WAIT, gone_at, progress, "killing"
        )
    report.all_gone_at = max(gone_at.values()) if gone_at and not still else None
    final: list[TerminatedJob] = []
    for job_id in ids:
        job = pending[job_id]
        if job_id in still:
            job = _replace(job, stopped=False, recoverable=False)
            report.not_stopped.append(
                {"id": job_id, "name": job.name, "worker": job.worker, "pid": still[job_id]}
            )
        final.append(_replace(job, terminated_at=gone_at.get(job_id)))
    records.add_terminated(final)
    report.terminated = [j for j in final if j.stopped]
    for item in report.not_stopped:
        _warn(
            guard,
            report,
            f"job {item['id']} ({item['name']}) on {item['worker']} could not be stopped",
        )
    return _finish(guard, records, report)


def _wait_gone(
    fleet: CeleryFleet,
    workers: list[str],
    ids: list[str],
    owners: Mapping[str, str],
    timeout: float,
    gone_at: dict[str, float],
    progress: EmergencyProgress | None,
    phase: str,
) -> dict[str, int]:
    began = time.monotonic()
    still = {i: 0 for i in ids}
    while True:
        running = fleet.running(workers, sorted(still))
        silent = set(workers) - fleet.last_replied
        now = time.time()
        for job_id in list(still):
            if job_id not in running and owners.get(job_id) not in silent:
                gone_at[job_id] = now
                del still[job_id]
            else:
                still[job_id] = running.get(job_id, still[job_id])
        elapsed = time.monotonic() - began
        if progress is not None:
            progress(phase, min(elapsed, timeout), timeout, len(still))
        if not still or elapsed >= timeout:
            return still
        time.sleep(POLL_INTERVAL)


def _terminated_record(
    guard: MaintenanceGuard,
    fleet: CeleryFleet,
    report: EmergencyReport,
    job: Mapping[str, Any],
    signal: str,
    terminated_at: float | None,
) -> TerminatedJob:
    name = str(job.get("name") or "?")
    task = fleet.app.tasks.get(name) if hasattr(fleet.app, "tasks") else None
    operation = job.get("operation") or getattr(task, "operation", None)
    if operation is None:
        operation = guard.task_operations.classify(name)
    recoverable = bool(job.get("recoverable", getattr(task, "recoverable", False)))
    delivery = job.get("delivery_info") or {}
    return TerminatedJob(
        id=str(job["id"]),
        name=name,
        operation=operation,
        args=json_safe(job.get("args")),
        kwargs=json_safe(job.get("kwargs")),
        worker=str(job.get("worker", "")),
        pid=int(job.get("worker_pid") or 0),
        started_at=job.get("time_start"),
        terminated_at=terminated_at,
        signal=signal,
        recoverable=recoverable,
        exchange=str(delivery.get("exchange") or ""),
        routing_key=str(delivery.get("routing_key") or ""),
        emergency_id=report.id,
    )


def _replace(job: TerminatedJob, **changes: Any) -> TerminatedJob:
    return TerminatedJob.from_dict({**job.to_dict(), **changes})


def _finish(
    guard: MaintenanceGuard, records: EmergencyRecords, report: EmergencyReport
) -> EmergencyReport:
    report.phase = "done"
    report.finished_at = time.time()
    records.save_report(report)
    if report.seconds_to_gone is not None:
        from .metrics import observe_revocation  # imported here, off the core's import path

        observe_revocation(report.seconds_to_gone)
    _audit(
        guard,
        "emergency_completed",
        report.by,
        report.reason,
        emergency=report.id,
        finished_in_grace=len(report.finished_in_grace),
        terminated=len(report.terminated),
        not_stopped=len(report.not_stopped),
        seconds_to_gone=report.seconds_to_gone,
    )
    return report  # the audit event above is also the log line (events.log_audit_event)


def _audit(guard: MaintenanceGuard, type_: str, actor: str, reason: str, **extra: Any) -> None:
    try:
        guard.store.append_event(event_fields(type_, actor=actor, reason=reason, **extra))
    except StoreUnavailable as exc:
        logger.warning(
            "cannot write audit event %s (%s): %s", type_, reason, exc, extra={"mg_event": type_}
        )


def _warn(guard: MaintenanceGuard, report: EmergencyReport | None, message: str) -> None:
    if report is not None:
        report.warnings.append(message)
    _audit(guard, "emergency_warning", "maintenance-guard", message)


# ---------------------------------------------------------------------------- deactivation


def after_disable(
    guard: MaintenanceGuard, actor: str, *, timeout: float = RESUME_TIMEOUT
) -> dict[str, Any]:
    """Checks once an emergency ends; warnings go to the audit log and the log.

    Re-adds the paused consumers (when the guard knows the Celery app; workers with the
    hooks also resume by themselves), waits up to ``timeout`` for every paused worker to
    consume again, and checks that no in-flight record of a terminated job remains and
    that the recorded jobs match the report. Never raises.
    """
    try:
        return _after_disable(guard, actor, timeout)
    except Exception as exc:  # deactivation itself already succeeded
        logger.exception("emergency deactivation checks failed")
        return {"ok": False, "warnings": [f"checks failed: {exc}"]}


def _after_disable(guard: MaintenanceGuard, actor: str, timeout: float) -> dict[str, Any]:
    from .inflight import InflightRegistry

    records = EmergencyRecords(guard.store)
    warnings: list[str] = []
    cancelled = records.cancelled()
    app = guard.celery_app
    if app is not None and cancelled:
        fleet = CeleryFleet(app)
        for worker, queues in cancelled.items():
            names = [q.name for q in queues if fleet.add_consumer(worker, q)]
            if names:
                records.mark_resumed(worker, names)
    deadline = time.monotonic() + timeout
    while True:
        resumed = records.resumed()
        waiting = sorted(w for w, qs in cancelled.items() if qs and w not in resumed)
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL)
    for worker in waiting:
        warnings.append(
            f"worker {worker} does not consume again (queues: "
            f"{', '.join(q.name for q in cancelled[worker])})"
        )

    terminated = records.terminated()
    terminated_ids = {j.id for j in terminated}
    registry = InflightRegistry(guard.store, guard.settings.heartbeat_timeout)
    leftover = sorted(terminated_ids & {j.id for j in registry.jobs()})
    if leftover:
        registry.finish(leftover)
        warnings.append(
            f"in-flight records of terminated jobs remained (removed): {', '.join(leftover)}"
        )

    report = records.report()
    if report is not None:
        if report.get("phase") != "done":
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
        _warn(guard, None, message)
    _audit(
        guard,
        "emergency_checks",
        actor,
        "deactivation checks",
        ok=not warnings,
        warnings=len(warnings),
    )
    return checks


# ---------------------------------------------------------------------------- recovery


@dataclass
class RecoveryResult:
    """What one `recover` run did."""

    recovered: list[dict[str, Any]] = field(default_factory=list)
    already_recovered: list[str] = field(default_factory=list)
    not_recoverable: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


def recover(
    guard: MaintenanceGuard, celery_app: Any = None, by: str | None = None
) -> RecoveryResult:
    """Re-enqueue each terminated recoverable job exactly once; list the others.

    Safe to run concurrently: each job is claimed atomically before it is sent, and a
    re-enqueued job gets a new task id (the old one stays refused by the workers). A job
    whose send fails is released (listed in ``failed``) so a later run retries it.
    Raises `InvalidInput` while maintenance is on, or without a Celery app.
    """
    actor = clean_actor(by)
    guard.refresh(raise_errors=True)
    if guard.current().is_active:
        raise InvalidInput("maintenance is still on; disable it before recovering jobs")
    app = celery_app if celery_app is not None else guard.celery_app
    if app is None:
        raise InvalidInput("recover needs the Celery app (--app module:attribute)")
    records = EmergencyRecords(guard.store)
    result = RecoveryResult()
    done = records.recovery()
    for job in records.terminated():
        task = app.tasks.get(job.name) if hasattr(app, "tasks") else None
        recoverable = bool(getattr(task, "recoverable", job.recoverable)) and job.stopped
        if not recoverable:
            result.not_recoverable.append(
                {
                    "id": job.id,
                    "name": job.name,
                    "operation": job.operation,
                    "args": job.args,
                    "kwargs": job.kwargs,
                    "worker": job.worker,
                }
            )
            continue
        if job.id in done or not records.claim_recovery(job.id, actor):
            result.already_recovered.append(job.id)
            continue
        new_id = uuid.uuid4().hex
        options: dict[str, Any] = {"task_id": new_id}
        if job.routing_key:
            options["routing_key"] = job.routing_key
            options["exchange"] = job.exchange or None
        args = job.args if isinstance(job.args, list) else list(job.args or [])
        kwargs = job.kwargs if isinstance(job.kwargs, dict) else {}
        try:
            app.send_task(job.name, args=args, kwargs=kwargs, **options)
        except Exception as exc:
            records.release_recovery(job.id)
            result.failed.append({"id": job.id, "name": job.name, "error": str(exc)})
            continue
        records.finish_recovery(
            job.id, {"state": "recovered", "new_id": new_id, "by": actor, "at": time.time()}
        )
        result.recovered.append({"id": job.id, "new_id": new_id, "name": job.name})
    _audit(
        guard,
        "jobs_recovered",
        actor,
        "recover",
        recovered=len(result.recovered),
        not_recoverable=len(result.not_recoverable),
        failed=len(result.failed),
    )
    return result
