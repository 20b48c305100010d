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
import weakref
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .changes import Enabling
from .emergency_records import (
    EmergencyRecords,
    EmergencyReport,
    QueueSpec,
    TerminatedJob,
    json_safe,
)
from .emergency_report import EmergencyOverview, build_report, render_report_text
from .errors import EmergencyInProgress, InvalidInput, StoreUnavailable
from .inflight import InflightRegistry
from .inputs import MAX_GRACE_SECONDS, clean_actor, clean_reason, parse_duration
from .modes import MaintenanceMode
from .store import event_fields

if TYPE_CHECKING:
    from .guard import MaintenanceGuard
    from .sessions import SessionInvalidator
    from .status import MaintenanceStatus

logger = logging.getLogger("maintenance_guard")

__all__ = [
    "CeleryFleet",
    "EmergencyInProgress",
    "EmergencyOverview",
    "EmergencyRun",
    "EmergencySetup",
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
    "setup_of",
    "validate_emergency_args",
    "watch_deactivation",
]

MAX_KILL_AFTER = 600
POLL_INTERVAL = 0.05
REPLY_TIMEOUT = 1.0
# After SIGKILL a process is gone within milliseconds; this only bounds a stuck worker.
AFTER_KILL_WAIT = 3.0
RESUME_TIMEOUT = 5.0
# How long the run waits for the workers that answered to record their pause.
PAUSE_CONFIRM_SECONDS = 5.0
# A run that owns the state but has stored no report yet is starting (or died at once).
STARTING_RUN_SECONDS = 60.0
FINISHED_PHASES = ("done", "called_off")

# Worker remote-control commands registered by `emergency_worker.register_commands`.
CMD_ACTIVE = "maintenance_guard_active"
CMD_RUNNING = "maintenance_guard_running"
CMD_KILL = "maintenance_guard_kill"

EmergencyProgress = Callable[[str, float, float, int], None]
"""``progress(phase, elapsed, total, jobs_left)``; phases: grace, terminating, killing."""


# ---------------------------------------------------------------------------- the fleet


class CeleryFleet:
    """Talks to the workers of one Celery app through its remote control, and only to
    the ``workers`` given (by hostname: ``destination=``), never to another app's
    workers on the same broker."""

    def __init__(self, app: Any, workers: list[str], timeout: float = REPLY_TIMEOUT) -> None:
        self.app = app
        self.workers = sorted(workers)
        self.timeout = timeout
        # Workers that answered the last command: a silent one's jobs count as running.
        self.last_replied: set[str] = set()

    def _gather(self, replies: list[dict[str, Any]] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for reply in replies or []:
            out.update(reply)
        return out

    def _call(self, command: str, workers: list[str], **arguments: Any) -> dict[str, Any]:
        if not workers:
            self.last_replied = set()
            return {}
        replies = self._gather(
            self.app.control.broadcast(
                command,
                arguments=arguments,
                destination=list(workers),
                reply=True,
                timeout=self.timeout,
                limit=len(workers),
            )
        )
        self.last_replied = set(replies) & set(workers)
        return {w: r for w, r in replies.items() if w in workers}

    def ping(self) -> set[str]:
        """The fleet's workers that answer a ping (returns once all did, else after the
        reply timeout)."""
        return set(self._call("ping", self.workers))

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

    def revoke(self, ids: list[str], signal: str, workers: list[str]) -> None:
        """Revoke ``ids`` on ``workers``, terminating their processes with ``signal``."""
        if ids and workers:
            self.app.control.revoke(ids, terminate=True, signal=signal, destination=sorted(workers))


def fleet_of(guard: MaintenanceGuard, app: Any) -> tuple[CeleryFleet, dict[str, dict[str, Any]]]:
    """The fleet of ``app``'s workers registered under the guard's prefix, and the
    registered workers of other brokers (unreachable through this app). Raises
    `StoreUnavailable`."""
    from .brokers import broker_of

    broker = broker_of(app)
    registered = InflightRegistry(guard.store, guard.settings.heartbeat_timeout).workers()
    mine = [w for w, info in registered.items() if info.get("broker") in (None, broker)]
    others = {w: info for w, info in registered.items() if w not in mine}
    return CeleryFleet(app, mine), others


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
    _audit(guard, "emergency_activated", actor, clean, emergency=report.id, grace_period=grace)
    run = EmergencyRun(guard, records, report, app, _safe_progress(progress), paused_before)
    run.pause()
    if invalidator is not None and not run.is_called_off():
        try:
            result = invalidator.invalidate_non_admin()
            report.sessions = result.to_dict()
            _audit(guard, "sessions_invalidated", actor, clean, **result.to_dict())
        except StoreUnavailable as exc:
            _warn(guard, report, f"sessions could not be invalidated: {exc}")
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
        _warn(
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
        return _finish(self.guard, self.records, self.report)

    # --- steps ---

    def pause(self) -> None:
        """Stop this app's workers consuming (recorded first, so a worker or a `disable`
        racing the pause resumes it), and note the jobs running now."""
        report = self.report
        if self.app is None:
            _warn(
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
            _warn(self.guard, report, f"cannot reach the Celery workers ({exc}); nothing revoked")
            self.fleet = None
            self._finish_without_fleet()
            return
        if self.is_called_off():
            self._stop_called_off()

    def _finish_without_fleet(self) -> None:
        self.done = True
        if self.is_called_off():
            self.report.phase = "called_off"
        _finish(self.guard, self.records, self.report)

    def _pause_fleet(self, fleet: CeleryFleet, others: dict[str, dict[str, Any]]) -> None:
        report = self.report
        for worker, info in sorted(others.items()):
            report.unreachable.append({"worker": worker, "why": "another broker", **_brief(info)})
            _warn(
                self.guard,
                report,
                f"worker {worker} is registered under this key prefix but uses another broker "
                f"({info.get('broker')}); run the emergency through that app too",
            )
        answered = fleet.ping()
        report.workers = sorted(answered)
        presence = _presence_by_pid(self.guard)
        registered = self.registry.workers()
        for worker in sorted(set(fleet.workers) - answered):
            info = registered.get(worker, {})
            seen = presence.get(str(info.get("pid")))
            ago = f"{self.guard.now() - seen:.0f}s ago" if seen else "unknown"
            report.unreachable.append({"worker": worker, "why": "no answer", "last_seen": seen})
            _warn(
                self.guard,
                report,
                f"worker {worker} is registered but did not answer (hung, stopped or dead; "
                f"last seen {ago}): it was not paused and its jobs could not be stopped",
            )
        if not answered:
            if not fleet.workers:
                _warn(
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
            _warn(
                self.guard, report, f"worker {worker} did not list its queues; it may still consume"
            )
        _audit(
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
                _warn(
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
            return _finish(self.guard, self.records, report)
        self._terminate(fleet, left)
        self.done = True
        return _finish(self.guard, self.records, report)

    def _note_finished(self, left: dict[str, dict[str, Any]]) -> None:
        report = self.report
        gone = [
            {"id": i, "name": j.get("name"), "worker": j.get("worker")}
            for i, j in self.start_jobs.items()
            if i not in left
        ]
        held = _held_back_ids(self.guard, self.app, [str(g["id"]) for g in gone])
        report.held_back = [g for g in gone if g["id"] in held]
        report.finished_in_grace = [g for g in gone if g["id"] not in held]

    def _terminate(self, fleet: CeleryFleet, left: dict[str, dict[str, Any]]) -> None:
        report = self.report
        workers = report.workers
        ids = sorted(left)
        report.phase = "terminating"
        pending = {
            i: _terminated_record(self.guard, fleet, report, left[i], "SIGTERM", None) for i in ids
        }
        # Recorded before the revoke: a worker restarted meanwhile must already refuse them.
        self.records.add_terminated(list(pending.values()))
        self.records.save_report(report)
        owners = {i: str(left[i].get("worker", "")) for i in ids}
        fleet.revoke(ids, "SIGTERM", sorted(set(owners.values())))
        _audit(
            self.guard,
            "jobs_revoked",
            report.by,
            report.reason,
            emergency=report.id,
            signal="SIGTERM",
            jobs=ids,
        )
        gone_at: dict[str, float] = {}
        still = _wait_gone(
            fleet, workers, ids, owners, report.kill_after, gone_at, self.progress, "terminating"
        )
        if still:
            report.phase = "killing"
            killed = fleet.kill(sorted({owners[i] for i in still}), sorted(still))
            _audit(
                self.guard,
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
                fleet,
                workers,
                sorted(still),
                owners,
                AFTER_KILL_WAIT,
                gone_at,
                self.progress,
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
                _warn(
                    self.guard,
                    report,
                    f"job {job_id} ({job.name}) on {job.worker} could not be stopped",
                )
            final.append(_replace(job, terminated_at=gone_at.get(job_id)))
        self.records.add_terminated(final)
        report.terminated = [j for j in final if j.stopped]


def _brief(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info[k] for k in ("broker", "pid") if k in info}


def _presence_by_pid(guard: MaintenanceGuard) -> dict[str, float]:
    """pid -> when that process last polled (its presence record), for the report."""
    read = getattr(guard.store, "read_presence", None)
    if read is None:
        return {}
    try:
        records = read()
    except StoreUnavailable:
        return {}
    return {str(r.get("pid")): float(r.get("seen_at") or 0) for r in records.values()}


def _held_back_ids(guard: MaintenanceGuard, app: Any, ids: list[str]) -> set[str]:
    """Which of ``ids`` a worker parked just before they would have started."""
    if not ids or app is None:
        return set()
    from .brokers import broker_key, broker_of
    from .deferred import DeferredQueue

    try:
        queue = DeferredQueue(guard.store, broker_key(broker_of(app)))
        return {i for i in ids if queue.state_of(i) in ("parked", "replaying", "sent")}
    except (StoreUnavailable, InvalidInput):
        return set()


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
    if report.phase != "called_off":
        report.phase = "done"
    report.finished_at = guard.now()
    records.save_report(report)
    if report.seconds_to_gone is not None:
        from .metrics import observe_revocation  # imported here, off the core's import path

        observe_revocation(report.seconds_to_gone)
    _audit(
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
    app = celery_app if celery_app is not None else setup_of(guard).celery_app
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
