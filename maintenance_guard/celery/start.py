"""The check just before a task starts in the pool: a message the worker reserved
before maintenance began (prefetch) is held back if its operation is blocked now.
"""

from __future__ import annotations

import logging
from typing import Any

from ..deferred import new_entry
from ..errors import StoreUnavailable
from ..modes import MaintenanceMode
from .consumers import paused_for, queue_of
from .context import replaying
from .deferral import call_payload, park_with_retry
from .installation import Installation, installation_of
from .worker import safe_verdict

logger = logging.getLogger("maintenance_guard")


def guard_task_start(task: Any) -> None:
    """Check ``task``'s messages again just before each one starts in the pool.

    A message the worker reserved before maintenance began (prefetch, or waiting for a
    free pool process) passed the re-check on receipt; Celery calls the task class's
    ``before_start`` inside the traced call, before the task body, so a blocked message
    is held back there: parked (it runs once after maintenance) and acknowledged with
    `Ignore`. Patched on the task's own class, wrapping any ``before_start`` it has;
    done before the pool starts (`worker_init`) so every pool process's tracer sees it.
    """
    cls = type(task)
    resolved = cls.before_start
    if getattr(resolved, "_mg_guarded", False) or str(task.name).startswith("celery."):
        return

    def before_start(self: Any, task_id: str, args: Any, kwargs: Any) -> Any:
        inst = installation_of(self.app)
        if inst is not None:
            refuse_start(inst, self, task_id, args, kwargs)
        return resolved(self, task_id, args, kwargs)

    before_start._mg_guarded = True  # type: ignore[attr-defined]
    cls.before_start = before_start


def refuse_start(inst: Installation, task: Any, task_id: str, args: Any, kwargs: Any) -> None:
    from celery.exceptions import Ignore, Reject

    inst.guard.catch_up()  # a pool process: what its parent knows, not 0.1 s old
    status = inst.guard.current()
    if status.paused_queues:
        send_back_if_paused(inst, task, task_id, args, kwargs)
    if status.mode is None or status.mode is MaintenanceMode.TEST:
        return  # test mode refuses nothing (its receipt re-check recorded the attempt)
    request = task.request
    headers = dict(getattr(request, "headers", None) or {})
    headers["id"] = task_id
    verdict = safe_verdict(inst, task.name, headers, again=True)
    if verdict == "run":
        return
    acks_late = bool(getattr(request, "acks_late", None) or task.acks_late)
    extra = {"mg_event": f"start_{verdict}", "mg_task": task.name, "mg_task_id": task_id}
    if verdict == "reject":
        logger.warning("rejected %s[%s] before it started", task.name, task_id, extra=extra)
        if acks_late:
            raise Reject("maintenance", requeue=False)
        raise Ignore()
    options = start_options(request)
    try:
        entry = new_entry(
            entry_id=task_id,
            kind="call",
            task=task.name,
            operation=inst.operation_of(task.name, task),
            source="worker-start",
            reason=inst.guard.current().reason,
            payload=call_payload(args, kwargs, options),
        )
        park_with_retry(inst, entry)
    except (StoreUnavailable, TypeError) as exc:
        # Never lose it: back to the broker (a paused worker leaves it queued there).
        logger.warning(
            "cannot park %s[%s] before it started (%s); returned to the broker",
            task.name,
            task_id,
            exc,
            extra=extra,
        )
        if acks_late:
            raise Reject("maintenance", requeue=True) from None
        with replaying():
            inst.app.send_task(task.name, args, kwargs, task_id=task_id, **options)
        raise Ignore() from None
    logger.warning(
        "held back %s[%s] before it started: reserved before maintenance; "
        "it runs once maintenance ends",
        task.name,
        task_id,
        extra=extra,
    )
    raise Ignore()


def send_back_if_paused(
    inst: Installation, task: Any, task_id: str, args: Any, kwargs: Any
) -> None:
    """A message the worker reserved before its queue was paused goes back to the broker
    instead of starting: rejected with requeue (``acks_late``) or, already acknowledged,
    published again as it came (same id, routing and canvas) and ignored here. Returns
    if its queue is not paused for this worker."""
    from celery.exceptions import Ignore, Reject

    request = task.request
    paused = paused_for(inst.guard, getattr(request, "hostname", None) or inst.hostname)
    queue = queue_of(inst.app, getattr(request, "delivery_info", None))
    if queue is None or queue not in paused:
        return
    extra = {"mg_event": "paused_sent_back", "mg_task": task.name, "mg_task_id": task_id}
    logger.info(
        "sent %s[%s] back to the broker before it started: queue %s is paused",
        task.name,
        task_id,
        queue,
        extra=extra,
    )
    if bool(getattr(request, "acks_late", None) or task.acks_late):
        raise Reject("queue paused", requeue=True)
    headers = dict(getattr(request, "headers", None) or {})
    options = start_options(request)
    # Keep the guard's stamps: the copy is the same submission, not a new one.
    stamps = {k: v for k, v in headers.items() if k.startswith("mg_")}
    options["headers"] = {**(options.get("headers") or {}), **stamps}
    with replaying():
        inst.app.send_task(task.name, args, kwargs, task_id=task_id, **options)
    raise Ignore()


def start_options(request: Any) -> dict[str, Any]:
    """`send_task` options that publish a started request again as it came: routing,
    canvas links, ids, custom headers (not the guard's own)."""
    delivery = getattr(request, "delivery_info", None) or {}
    headers = {
        k: v
        for k, v in (getattr(request, "headers", None) or {}).items()
        if not k.startswith("mg_")
    }
    limits = getattr(request, "timelimit", None) or (None, None)
    options = {
        "exchange": delivery.get("exchange"),
        "routing_key": delivery.get("routing_key"),
        "priority": delivery.get("priority"),
        "headers": headers or None,
        "link": request.callbacks,
        "link_error": request.errbacks,
        "chain": request.chain,
        "chord": request.chord,
        "group_id": request.group,
        "group_index": getattr(request, "group_index", None),
        "root_id": request.root_id,
        "parent_id": request.parent_id,
        "expires": request.expires,
        "shadow": getattr(request, "shadow", None),
        "retries": request.retries or None,
        "time_limit": limits[0],
        "soft_time_limit": limits[1],
    }
    return {k: v for k, v in options.items() if v is not None}
