"""``on_maintenance="defer"``: a refused call parked (idempotently, by task id) instead
of raised, and the truth told when the store did not confirm it.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError

from ..deferred import DeferredEntry, new_entry
from ..errors import DeferralUnconfirmed, MaintenanceActive, MaintenanceGuardError, StoreUnavailable
from .context import kombu_dumps
from .installation import Installation

logger = logging.getLogger("maintenance_guard")

CALL_OPTIONS = (
    "queue",
    "routing_key",
    "exchange",
    "priority",
    "countdown",
    "eta",
    "expires",
    "headers",
    "link",
    "link_error",
    "chain",
    "chord",
    "group_id",
    "group_index",
    "root_id",
    "parent_id",
    "shadow",
    "time_limit",
    "soft_time_limit",
    "ignore_result",
    "retries",
)


def call_payload(args: Any, kwargs: Any, options: dict[str, Any]) -> dict[str, str]:
    """The stored form of a `send_task` call (raises TypeError for non-JSON arguments)."""
    kept = {}
    for key in CALL_OPTIONS:
        value = options.get(key)
        if value is None:
            continue
        if key in ("queue", "exchange") and not isinstance(value, str):
            value = getattr(value, "name", None)
        if value is not None:
            kept[key] = value
    return {
        "args": kombu_dumps(list(args or ())),
        "kwargs": kombu_dumps(dict(kwargs or {})),
        "options": kombu_dumps(kept),
    }


def write_may_have_landed(exc: StoreUnavailable) -> bool:
    """False only when the command certainly never reached Redis (no connection)."""
    cause = exc.__cause__
    return not (isinstance(cause, (OSError, RedisError)) and "connecting" in str(cause).lower())


def defer_call(
    inst: Installation,
    name: str,
    args: Any,
    kwargs: Any,
    operation: str | None,
    options: dict[str, Any],
    refused: MaintenanceActive,
) -> Any:
    from celery.utils import uuid

    task_id = options.get("task_id") or uuid()
    try:
        payload = call_payload(args, kwargs, options)
    except TypeError as exc:
        logger.warning("cannot defer %s: arguments are not JSON: %s", name, exc)
        raise refused from None
    entry = new_entry(
        entry_id=task_id,
        kind="call",
        task=name,
        operation=operation,
        source="publish",
        reason=refused.status.reason,
        payload=payload,
    )
    try:
        parked = park_with_retry(inst, entry)
        inst.uncertain.pop(task_id, None)  # confirmed now
    except StoreUnavailable as exc:
        if not write_may_have_landed(exc):
            logger.warning("cannot defer %s, refusing instead: %s", name, exc)
            raise refused from None
        # The write timed out: it may land later. Say so, and make a resubmission with
        # the same id safe (parking is idempotent; see resolve_resubmission).
        if len(inst.uncertain) < 10_000:
            inst.uncertain[task_id] = entry
        logger.warning(
            "could not confirm the deferral of %s[%s]: %s",
            name,
            task_id,
            exc,
            extra={"mg_event": "deferral_unconfirmed", "mg_task": name, "mg_task_id": task_id},
        )
        raise DeferralUnconfirmed(
            refused.operation,
            refused.mode,
            f"{refused.message} The request to run it later could not be confirmed "
            f"(the state store did not answer in time): it may run after maintenance "
            f"under id {task_id}. To be sure, submit it again with task_id={task_id!r}: "
            "it is never stored or run twice.",
            refused.retry_after,
            refused.status,
            task_id=task_id,
        ) from None
    logger.info(
        "deferred %s[%s] until maintenance ends%s",
        name,
        task_id,
        "" if parked else " (already deferred under this id)",
        extra={"mg_event": "deferred", "mg_task": name, "mg_task_id": task_id},
    )
    result_cls = options.get("result_cls") or inst.app.AsyncResult
    return result_cls(task_id)


def park_with_retry(inst: Installation, entry: DeferredEntry) -> bool:
    """Park once; after a timeout (the write may still land) park again: idempotent."""
    try:
        return inst.park(entry)
    except StoreUnavailable as exc:
        if not write_may_have_landed(exc):
            raise
        return inst.park(entry)


def resolve_resubmission(inst: Installation, task_id: str, options: dict[str, Any]) -> Any:
    """A submission whose earlier deferral was unconfirmed comes again: if the first one
    landed, return its result handle instead of submitting twice; None to go on."""
    try:
        state = inst.deferred.state_of(task_id)
    except StoreUnavailable as exc:
        raise MaintenanceGuardError(
            f"cannot tell whether task {task_id} was already deferred (the state store is "
            f"unreachable: {exc}); not submitting it a second time; try again later"
        ) from None
    inst.uncertain.pop(task_id, None)
    if state is None:
        return None
    logger.info(
        "task %s was already deferred (%s); not submitted again",
        task_id,
        state,
        extra={"mg_event": "deferral_confirmed", "mg_task_id": task_id},
    )
    result_cls = options.get("result_cls") or inst.app.AsyncResult
    return result_cls(task_id)
