"""The end of the grace period: terminate the jobs that still run (SIGTERM, then SIGKILL
after ``kill_after``), wait until they are gone, record them; and the run's last report."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..metrics import observe_revocation
from .audit import audit, warn
from .fleet import POLL_INTERVAL, CeleryFleet
from .records import EmergencyRecords, EmergencyReport, TerminatedJob, json_safe

if TYPE_CHECKING:
    from ..guard import MaintenanceGuard
    from .run import EmergencyProgress

# After SIGKILL a process is gone within milliseconds; this only bounds a stuck worker.
AFTER_KILL_WAIT = 3.0


def terminate(
    guard: MaintenanceGuard,
    records: EmergencyRecords,
    report: EmergencyReport,
    fleet: CeleryFleet,
    left: dict[str, dict[str, Any]],
    progress: EmergencyProgress | None,
) -> None:
    """Revoke ``left`` (id -> job info) on their workers, SIGKILL what outlives
    ``kill_after``, and record every job (terminated, or still running)."""
    workers = report.workers
    ids = sorted(left)
    report.phase = "terminating"
    pending = {i: terminated_record(guard, fleet, report, left[i], "SIGTERM", None) for i in ids}
    # Recorded before the revoke: a worker restarted meanwhile must already refuse them.
    records.add_terminated(list(pending.values()))
    records.save_report(report)
    owners = {i: str(left[i].get("worker", "")) for i in ids}
    fleet.revoke(ids, "SIGTERM", sorted(set(owners.values())))
    audit(
        guard,
        "jobs_revoked",
        report.by,
        report.reason,
        emergency=report.id,
        signal="SIGTERM",
        jobs=ids,
        # For the notifications: what was stopped and whether `recover` can run it again
        # (no arguments: they may hold user data).
        terminated=[
            {
                "id": i,
                "task": pending[i].name,
                "worker": pending[i].worker,
                "recoverable": pending[i].recoverable,
            }
            for i in ids
        ],
    )
    gone_at: dict[str, float] = {}
    still = wait_gone(
        fleet, workers, ids, owners, report.kill_after, gone_at, progress, "terminating"
    )
    if still:
        report.phase = "killing"
        killed = fleet.kill(sorted({owners[i] for i in still}), sorted(still))
        audit(
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
        still = wait_gone(
            fleet,
            workers,
            sorted(still),
            owners,
            AFTER_KILL_WAIT,
            gone_at,
            progress,
            "killing",
        )
    report.all_gone_at = max(gone_at.values()) if gone_at and not still else None
    final: list[TerminatedJob] = []
    for job_id in ids:
        job = pending[job_id]
        if job_id in still:
            job = _replace(job, stopped=False, recoverable=False)
            report.not_stopped.append(
                {
                    "id": job_id,
                    "name": job.name,
                    "worker": job.worker,
                    "pid": still[job_id],
                    "why": "still running after SIGKILL",
                }  # fmt: skip
            )
            warn(
                guard,
                report,
                f"job {job_id} ({job.name}) on {job.worker} could not be stopped",
            )
        final.append(_replace(job, terminated_at=gone_at.get(job_id)))
    records.add_terminated(final)
    report.terminated = [j for j in final if j.stopped]


def wait_gone(
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


def terminated_record(
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


def finish(
    guard: MaintenanceGuard, records: EmergencyRecords, report: EmergencyReport
) -> EmergencyReport:
    """Close the report (``done`` unless called off), store it and audit the outcome."""
    if report.phase != "called_off":
        report.phase = "done"
    report.finished_at = guard.now()
    records.save_report(report)
    if report.seconds_to_gone is not None:
        observe_revocation(report.seconds_to_gone)
    audit(
        guard,
        "emergency_completed" if report.phase == "done" else "emergency_called_off",
        report.by,
        report.reason,
        emergency=report.id,
        finished_in_grace=len(report.finished_in_grace),
        held_back=len(report.held_back),
        terminated=len(report.terminated),
        not_stopped=len(report.not_stopped),
        seconds_to_gone=report.seconds_to_gone,
    )
    return report  # the audit event above is also the log line (events.log_audit_event)
