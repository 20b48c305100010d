"""Refusal at publish: the wrapped ``app.send_task`` every ``apply_async``, ``delay``,
``send_task``, canvas step and beat publish goes through.

Celery's ``Signal.send`` swallows receiver exceptions (`celery/utils/dispatch/signal.py`),
so raising in ``before_task_publish`` would not stop a publish: the refusal happens in the
send path itself, before any message is built. The wrapper also stamps the headers.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from celery import Celery

from ..deferred import check_policy
from ..errors import (
    ConcurrentChange,
    InvalidInput,
    MaintenanceActive,
    MaintenanceUpcoming,
    StoreUnavailable,
)
from ..guard import MaintenanceGuard
from ..inputs import MAX_DURATION_SECONDS
from ..modes import MaintenanceMode
from .context import (
    HEADER_ADMIN,
    HEADER_GUARDED,
    HEADER_PUBLISHED_AT,
    HEADER_RUNNING_WORK,
    local,
    stamp_time,
)
from .deferral import defer_call, resolve_resubmission
from .installation import Installation
from .names import option_names

logger = logging.getLogger("maintenance_guard")


def is_running_work(app: Any, name: str, task_id: str | None, parent_id: str | None) -> bool:
    """A retry of the running job, or the next step of its canvas (chain, callback, chord)."""
    current = app.current_worker_task
    if current is None:
        return False
    request = current.request
    if task_id is not None and task_id == request.id:
        return True
    if parent_id is not None and parent_id == request.id:
        return True
    chord = getattr(request, "chord", None)
    return isinstance(chord, dict) and chord.get("task") == name


def refuse_publish(
    inst: Installation,
    name: str,
    operation: str | None,
    *,
    running_work: bool,
) -> None:
    """Raise `MaintenanceActive` if publishing ``name`` is refused now.

    Running work (a retry or a canvas continuation of a job already running) is allowed
    in normal mode and refused in emergency mode.
    """
    guard = inst.guard
    if running_work and guard.current().mode is MaintenanceMode.NORMAL:
        return
    guard.check(operation, surface="publish", target=name, normal_exempt=running_work)


def stamp(
    options: dict[str, Any],
    now: float,
    *,
    running_work: bool = False,
    inst: Any = None,
    name: str = "",
) -> None:
    """Stamp the guard's headers through the ``headers`` option, which Celery merges into
    the message headers (cheaper than a ``before_task_publish`` receiver). ``inst`` is
    given during maintenance: an admin's submission then carries a signed stamp."""
    headers = dict(options.get("headers") or ())
    published = stamp_time(now)
    headers[HEADER_PUBLISHED_AT] = published
    headers[HEADER_GUARDED] = "1"
    if running_work:
        headers[HEADER_RUNNING_WORK] = "1"
    if inst is not None and MaintenanceGuard.acting_as_admin():
        from celery.utils import uuid

        task_id = options.setdefault("task_id", None) or uuid()
        options["task_id"] = task_id
        try:
            headers[HEADER_ADMIN] = inst.signer.sign(name, task_id, published)
        except StoreUnavailable as exc:
            logger.warning(
                "cannot sign an admin's submission of %s (%s); workers will hold it back",
                name,
                exc,
                extra={"mg_event": "admin_sign_failed", "mg_task": name},
            )
    options["headers"] = headers


def maintenance_off(guard: MaintenanceGuard) -> bool:
    """Nothing is refused while maintenance is off, and a message published now predates
    any maintenance that starts later, so it needs no running-work mark either. Memory
    only; starts the guard's watcher on first use."""
    guard.start()
    return guard.current().mode is None


def publish_is_quiet(inst: Installation) -> bool:
    """True if a publish now needs only its stamps: maintenance off, no queue paused, no
    window planned. Remembers the snapshot as ``inst.quiet``, so that a publish under the
    same snapshot (swapped whole on every change) knows it by identity alone. Memory only;
    starts the guard's watcher on first use."""
    guard = inst.guard
    guard.start()
    snap = guard.snapshot
    status = snap.status
    if status.mode is None and not status.paused_queues and not status.windows:
        inst.quiet = snap
        return True
    return False


def patch_send_task(app: Celery, inst: Installation) -> None:
    """Wrap ``app.send_task``: the one place a publish is checked and stamped (a
    `GuardedTask` checks in ``apply_async`` only what this wrapper cannot see)."""
    original = app.send_task
    guard = inst.guard
    published_at, guarded = HEADER_PUBLISHED_AT, HEADER_GUARDED

    @functools.wraps(original)
    def send_task(*call: Any, **options: Any) -> Any:
        # Every publish of a process without maintenance takes the first branch: an
        # identity check (the watcher still runs: its snapshot is current) and the stamps.
        # No named parameters: each keyword of the call (about ten reach here) would be
        # compared with every name before it lands in ``options``.
        if (inst.known_quiet() or publish_is_quiet(inst)) and not inst.uncertain:
            if "on_maintenance" in options:
                policy = options.pop("on_maintenance")
                if policy is not None:
                    check_policy(policy)
            headers = options.get("headers")
            micros = str(int(guard.now() * 1_000_000))  # stamp_time, inlined
            stamped = {published_at: micros[:-6] + "." + micros[-6:], guarded: "1"}
            options["headers"] = {**headers, **stamped} if headers else stamped
            return original(*call, **options)
        return send_checked(inst, original, *send_task_arguments(*call, **options))

    app.send_task = send_task


def send_task_arguments(
    name: str, args: Any = None, kwargs: Any = None, **options: Any
) -> tuple[str, Any, Any, dict[str, Any]]:
    """``app.send_task``'s call as (name, args, kwargs, options)."""
    return name, args, kwargs, options


def send_checked(
    inst: Installation,
    send: Callable[..., Any],
    name: str,
    args: Any,
    kwargs: Any,
    options: dict[str, Any],
) -> Any:
    """`send_task` when maintenance is on, a queue paused, a window planned or a deferral
    in doubt: refuse, defer, skip (beat) or send with the stamps."""
    app = inst.app
    policy = options.pop("on_maintenance", None)
    if (
        inst.uncertain
        and options.get("task_id") in inst.uncertain
        and not getattr(local, "replaying", False)
    ):
        earlier = resolve_resubmission(inst, options["task_id"], options)
        if earlier is not None:
            return earlier
    if (
        inst.guard.current().paused_queues
        and not getattr(local, "replaying", False)
        and skip_for_beat(inst, name, args, kwargs, options)
    ):
        return None
    if maintenance_off(inst.guard):
        if policy is not None:
            check_policy(policy)
        if inst.guard.snapshot.status.windows and not (
            getattr(local, "checked", False) or getattr(local, "replaying", False)
        ):
            deferred = refuse_before_window(inst, name, args, kwargs, options, policy)
            if deferred is not None:
                return deferred
        stamp(options, inst.guard.now())
        return send(name, args, kwargs, **options)
    task_type = options.get("task_type") or app._tasks.get(name)
    if policy is None:
        policy = getattr(task_type, "on_maintenance", None) or "refuse"
    check_policy(policy)
    running = is_running_work(app, name, options.get("task_id"), options.get("parent_id"))
    if not getattr(local, "checked", False) and not getattr(local, "replaying", False):
        operation = inst.operation_of(name, task_type)
        try:
            refuse_publish(inst, name, operation, running_work=running)
        except MaintenanceActive as refused:
            if policy != "defer":
                log_refusal(name, operation, refused)
                raise
            return defer_call(inst, name, args, kwargs, operation, options, refused)
        # Callbacks, the rest of a chain, a chord body: published later by a worker,
        # so they are checked now, with the task itself.
        refuse_names(inst, option_names(options), running_work=running)
    stamp(options, inst.guard.now(), running_work=running, inst=inst, name=name)
    return send(name, args, kwargs, **options)


BEAT_HEADER = "celery_beat_task"  # set by Celery's beat on what it sends (5.5+)


def skip_for_beat(
    inst: Installation, name: str, args: Any, kwargs: Any, options: dict[str, Any]
) -> bool:
    """True if beat is sending ``name`` to a queue paused with ``beat=True``: the entry
    is skipped (logged, counted), not queued behind the pause, and the schedule moves on
    (beat advanced it before sending), so a resume fires no backlog."""
    headers = options.get("headers") or {}
    if not (headers.get(BEAT_HEADER) or inst.in_beat):
        return False
    try:
        route = inst.app.amqp.router.route(dict(options), name, args, kwargs)
        queue = getattr(route.get("queue"), "name", None)
    except Exception:  # routing errors are Celery's to report, when it sends
        return False
    now = inst.guard.now()
    pause = next(
        (p for p in inst.guard.current().paused_queues if p.queue == queue and p.in_effect(now)),
        None,
    )
    if pause is None or not pause.beat:
        return False
    inst.guard.recorder.count("beat", queue, kind="beat_skipped")
    logger.warning(
        "beat: skipped %s: queue %s is paused (%s)",
        name,
        queue,
        pause.reason,
        extra={"mg_event": "beat_skipped", "mg_task": name, "mg_queue": queue},
    )
    return True


def refuse_before_window(
    inst: Installation,
    name: str,
    args: Any,
    kwargs: Any,
    options: dict[str, Any],
    policy: str | None,
) -> Any:
    """Refuse (`MaintenanceUpcoming`) or defer a submission that would still run when a
    scheduled window opens, by the task's ``expected_runtime``, or that falls in the
    window's drain period; None when it may go. Running work (a retry, a canvas step of
    a running job) is not refused here."""
    task_type = options.get("task_type") or inst.app._tasks.get(name)
    if is_running_work(inst.app, name, options.get("task_id"), options.get("parent_id")):
        return None
    operation = inst.operation_of(name, task_type)
    runtime = expected_runtime_of(task_type)
    try:
        inst.guard.check_before_window(operation, runtime, surface="publish")
    except MaintenanceUpcoming as refused:
        policy = policy or getattr(task_type, "on_maintenance", None) or "refuse"
        if policy != "defer":
            log_refusal(name, operation, refused)
            raise
        # Held first: no replay may send it before the window has ended.
        try:
            inst.guard.windows.hold_deferred_work(refused.window_id)
        except (StoreUnavailable, ConcurrentChange) as exc:
            logger.warning("cannot defer %s past the window, refusing instead: %s", name, exc)
            raise refused from None
        return defer_call(inst, name, args, kwargs, operation, options, refused)
    return None


def expected_runtime_of(task: Any) -> float | None:
    """A task's declared ``expected_runtime`` (seconds); raises `InvalidInput` for one
    that is not a number of seconds between 1 and 7 days."""
    runtime = getattr(task, "expected_runtime", None)
    if runtime is None:
        return None
    if (
        isinstance(runtime, bool)
        or not isinstance(runtime, (int, float))
        or not 1 <= runtime <= MAX_DURATION_SECONDS
    ):
        raise InvalidInput(
            f"{getattr(task, 'name', task)}: expected_runtime must be seconds between 1 and "
            f"{MAX_DURATION_SECONDS}, not {runtime!r}"
        )
    return float(runtime)


def log_refusal(name: str, operation: str | None, refused: MaintenanceActive) -> None:
    logger.warning(
        "refused to publish %s during %s maintenance",
        name,
        refused.mode,
        extra={"mg_event": "publish_refused", "mg_task": name, "mg_operation": operation},
    )


def refuse_names(inst: Installation, names: Iterable[str], *, running_work: bool) -> None:
    """Raise `MaintenanceActive` if publishing any of the task ``names`` is refused now."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        operation = inst.operation_of(name, inst.app._tasks.get(name))
        try:
            refuse_publish(inst, name, operation, running_work=running_work)
        except MaintenanceActive as refused:
            log_refusal(name, operation, refused)
            raise
