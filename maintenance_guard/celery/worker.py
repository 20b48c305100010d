"""The worker's re-check on receipt: a consumer bootstep wraps each task's message
handler, so a message published during maintenance by a producer without the guard is
deferred or rejected before it reaches the pool; ETA messages are checked when due.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

from celery import bootsteps

from ..deferred import new_entry
from ..errors import MaintenanceActive
from ..modes import MaintenanceMode
from .consumers import paused_for, queue_of
from .context import (
    HEADER_ADMIN,
    HEADER_GUARDED,
    HEADER_PUBLISHED_AT,
    HEADER_RUNNING_WORK,
    kombu_dumps,
    kombu_loads,
)
from .installation import Installation, installation_of

logger = logging.getLogger("maintenance_guard")


def worker_verdict(
    inst: Installation,
    name: str,
    headers: dict[str, Any],
    *,
    dry_run: bool = False,
    again: bool = False,
) -> str:
    """``"run"``, ``"defer"`` or ``"reject"`` for a message the worker received, or is
    about to start, now.

    Normal mode runs messages published before maintenance began (by their
    ``mg_published_at`` stamp; unless a drain holds them) and running work; a message
    without the stamp was published by a producer without the guard at an unknown time
    and is not run while its operation is blocked. Emergency mode runs no blocked
    message. A message an admin submitted (signed stamp) runs. ``dry_run`` decides
    without counting or recording the attempt; ``again`` (the check before a reserved
    message starts) does not count an admin's message a second time.
    """
    guard = inst.guard
    status = guard.current()
    if not status.is_active:
        return "run"
    operation = inst.operation_of(name, inst.app._tasks.get(name))
    stamp = headers.get(HEADER_ADMIN)
    if stamp and inst.signer.verify(
        stamp, name, headers.get("id"), headers.get(HEADER_PUBLISHED_AT)
    ):
        if not dry_run and not again:
            guard.note_admin_attempt("worker", operation)
        return "run"  # an admin's submission (signed at publish: admin_signature.py)
    running_work = headers.get(HEADER_RUNNING_WORK) == "1"
    published = as_float(headers.get(HEADER_PUBLISHED_AT))
    started = status.started_at
    before = published is not None and started is not None and published < started
    normal = status.mode is MaintenanceMode.NORMAL
    if normal and (running_work or (before and not status.hold_queued)):
        return "run"
    if status.mode is MaintenanceMode.TEST and headers.get(HEADER_GUARDED) == "1" and not before:
        return "run"  # test mode recorded this attempt at its (guarded) publish already
    if dry_run:
        if operation is None:
            blocked = status.mode is MaintenanceMode.EMERGENCY
        else:
            blocked = guard.is_blocked(operation)
        return inst.worker_policy if blocked else "run"
    try:
        guard.check(operation, surface="worker", target=name, normal_exempt=running_work or before)
    except MaintenanceActive:
        return inst.worker_policy
    return "run"


def as_float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def park_message(inst: Installation, message: Any, name: str, reason: str) -> None:
    headers = dict(message.headers or {})
    delivery = dict(message.delivery_info or {})
    properties = dict(message.properties or {})
    body = message.body
    if isinstance(body, str):
        body = body.encode("utf-8")
    payload = {
        "body": base64.b64encode(body).decode("ascii"),
        "headers": kombu_loads(kombu_dumps(headers)),
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "exchange": delivery.get("exchange") or "",
        "routing_key": delivery.get("routing_key") or "",
        "properties": {
            "correlation_id": properties.get("correlation_id"),
            "reply_to": properties.get("reply_to"),
            "priority": properties.get("priority") or delivery.get("priority"),
        },
    }
    inst.park(
        new_entry(
            entry_id=str(headers.get("id") or properties.get("correlation_id")),
            kind="message",
            task=name,
            operation=inst.operation_of(name, inst.app._tasks.get(name)),
            source="worker",
            reason=reason,
            payload=payload,
        )
    )


def hold_back(
    inst: Installation,
    verdict: str,
    name: str,
    message: Any,
    ack: Callable[[], Any],
    reject: Callable[[bool], Any],
) -> Any:
    """Defer (park, then ack) or reject a message the worker does not run now."""
    headers = message.headers or {}
    task_id = headers.get("id")
    extra = {"mg_event": f"worker_{verdict}", "mg_task": name, "mg_task_id": task_id}
    if verdict == "defer":
        try:
            park_message(inst, message, name, inst.guard.current().reason)
        except Exception as exc:
            # Cannot park: give it back to the broker (redelivered later), never lose it.
            logger.warning("cannot defer %s[%s]: %s; requeued", name, task_id, exc, extra=extra)
            return reject(True)
        logger.warning(
            "deferred %s[%s]: published during maintenance without the guard",
            name,
            task_id,
            extra=extra,
        )
        return ack()
    logger.warning(
        "rejected %s[%s]: published during maintenance without the guard",
        name,
        task_id,
        extra=extra,
    )
    return reject(False)


def safe_verdict(
    inst: Installation, name: str, headers: dict[str, Any], *, again: bool = False
) -> str:
    try:
        if worker_verdict(inst, name, headers, dry_run=True) != "run":
            # Holding back costs Redis writes anyway: first make sure the verdict is not
            # based on a stale view (a replayer that saw maintenance end publishes before
            # this worker's notification arrives; parking its message again would run it
            # out of order).
            inst.guard.refresh()
        return worker_verdict(inst, name, headers, again=again)
    except Exception:  # the guard must never take the worker down
        logger.exception("maintenance re-check failed for %s; running it", name)
        return "run"


def guard_handler(
    inst: Installation,
    name: str,
    handler: Callable[..., Any],
    connection_errors: tuple[type[BaseException], ...],
    hostname: str | None = None,
) -> Callable[..., Any]:
    def on_message(
        message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any
    ) -> Any:
        if inst.guard.current().paused_queues and from_paused_queue(inst, message, hostname):
            # Fetched before the pause took effect here: back to the broker (at the
            # front of a Redis queue; in place on RabbitMQ), for after the pause.
            logger.info(
                "returned %s[%s] to the broker: its queue is paused",
                name,
                (message.headers or {}).get("id"),
                extra={"mg_event": "paused_requeued", "mg_task": name},
            )
            return reject(logger, connection_errors, True)
        verdict = safe_verdict(inst, name, message.headers or {})
        if verdict == "run":
            return handler(message, body, ack, reject, callbacks, **kw)
        return hold_back(
            inst,
            verdict,
            name,
            message,
            lambda: ack(logger, connection_errors),
            lambda requeue: reject(logger, connection_errors, requeue),
        )

    on_message._mg_guarded = True  # type: ignore[attr-defined]
    return on_message


def from_paused_queue(inst: Installation, message: Any, hostname: str | None) -> bool:
    try:
        paused = paused_for(inst.guard, hostname)
        return bool(paused) and queue_of(inst.app, message.delivery_info) in paused
    except Exception:  # the guard must never take the worker down
        logger.exception("queue pause check failed; running the message")
        return False


def guard_eta_requests(inst: Installation, on_task_request: Callable[..., Any]) -> Any:
    """Check a request with an ETA again when it comes due (it was checked on receipt,
    maybe before maintenance began)."""
    from celery.worker import state as worker_state

    def on_request(request: Any, *args: Any, **kwargs: Any) -> Any:
        if request.eta is None or request.name.startswith("celery."):
            return on_task_request(request, *args, **kwargs)
        verdict = safe_verdict(inst, request.name, dict(request.request_dict))
        if verdict == "run":
            return on_task_request(request, *args, **kwargs)
        worker_state.task_ready(request)
        return hold_back(
            inst,
            verdict,
            request.name,
            request.message,
            request.acknowledge,
            lambda requeue: request.reject(requeue=requeue),
        )

    on_request._mg_guarded = True  # type: ignore[attr-defined]
    return on_request


class GuardConsumerStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Worker consumer step: wraps every task's message handler with the re-check, and
    the hand-over of ETA requests when they come due."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        inst = installation_of(c.app)
        if inst is None:
            return
        for name, handler in list(c.strategies.items()):
            if name.startswith("celery.") or getattr(handler, "_mg_guarded", False):
                continue
            c.strategies[name] = guard_handler(
                inst, name, handler, tuple(c.connection_errors), str(c.hostname)
            )
        if not getattr(c.on_task_request, "_mg_guarded", False):
            c.on_task_request = guard_eta_requests(inst, c.on_task_request)
