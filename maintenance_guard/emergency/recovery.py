"""`recover`: after an emergency, re-enqueue each terminated recoverable job once."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput
from ..inputs import clean_actor
from .audit import audit
from .records import EmergencyRecords
from .setup import setup_of

if TYPE_CHECKING:
    from ..guard import MaintenanceGuard


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
    audit(
        guard,
        "jobs_recovered",
        actor,
        "recover",
        recovered=len(result.recovered),
        not_recoverable=len(result.not_recoverable),
        failed=len(result.failed),
    )
    return result
