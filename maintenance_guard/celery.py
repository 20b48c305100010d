"""Celery adapter: refuse blocked submissions, re-check on the worker, track running jobs.

Celery's ``Signal.send`` swallows receiver exceptions, so refusals happen in the send
path itself: `install` wraps ``app.send_task`` (every ``apply_async``, ``delay``,
``send_task``, canvas step and beat publish goes through it), canvas ``apply_async`` is
wrapped to check a whole chain/group/chord before its first message, and `GuardedTask`
refuses before any message is built; the wrapped ``send_task`` also stamps the publish
time into the message headers. Signals are used only to observe: the in-flight registry
(``task_prerun``/``postrun``/...) and the worker hooks.
On the worker, a consumer bootstep wraps each task's message handler, so a message
published during maintenance by a producer without the guard is deferred or rejected
before it reaches the pool.
"""

from __future__ import annotations

import base64
import functools
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from celery import Celery, Task, bootsteps, signals
from celery import canvas as _canvas
from kombu.utils import json as _kombu_json

from .deferred import DeferredEntry, DeferredQueue, check_policy, new_entry
from .errors import MaintenanceActive, MaintenanceGuardError, StoreUnavailable
from .guard import MaintenanceGuard
from .inflight import Heartbeat, InflightJob, InflightRegistry
from .modes import MaintenanceMode
from .settings import GuardSettings
from .status import MaintenanceStatus

logger = logging.getLogger("maintenance_guard")

CONFIG_PREFIX = "maintenance_guard_"
HEADER_PUBLISHED_AT = "mg_published_at"
HEADER_GUARDED = "mg_guarded"
HEADER_RUNNING_WORK = "mg_running_work"
HEADER_REPLAYED = "mg_replayed"

_local = threading.local()

# kombu's JSON round-trips datetimes, UUIDs and decimals (task options such as ``eta``).
kombu_dumps: Callable[[Any], str] = _kombu_json.dumps
kombu_loads: Callable[[str], Any] = _kombu_json.loads


# ---------------------------------------------------------------------- installation


@dataclass
class Installation:
    """What `install` connected for one Celery app."""

    app: Celery
    guard: MaintenanceGuard
    registry: InflightRegistry
    deferred: DeferredQueue
    heartbeat: Heartbeat
    worker_policy: str
    hostname: str | None = None
    receivers: list[tuple[Any, Callable[..., Any]]] = field(default_factory=list)
    _replay_lock: threading.Lock = field(default_factory=threading.Lock)

    def operation_of(self, name: str, task: Any = None) -> str | None:
        """The operation a task name maps to (a `GuardedTask`'s declaration first)."""
        declared = getattr(task, "operation", None) if task is not None else None
        if isinstance(declared, str) and declared:
            return declared
        return self.guard.task_operations.classify(name)

    def replay_deferred(self) -> int:
        """Replay parked submissions now if maintenance is off; returns how many were sent."""
        # Read the store, not only memory: a replay started on a stale "off" would
        # publish during a new maintenance (the worker re-check would park it again).
        if self.guard.refresh().is_active:
            return 0
        with self._replay_lock:
            report = self.deferred.replay(
                self._send_entry, keep_going=lambda: not self.guard.current().is_active
            )
        return len(report.sent)

    def _send_entry(self, entry: DeferredEntry) -> None:
        payload = entry.payload
        if entry.kind == "call":
            options = dict(kombu_loads(payload["options"]))
            args, kwargs = kombu_loads(payload["args"]), kombu_loads(payload["kwargs"])
            headers = dict(options.pop("headers", None) or {})
            headers[HEADER_REPLAYED] = "1"
            with _replaying():
                self.app.send_task(
                    entry.task, args, kwargs, task_id=entry.id, headers=headers, **options
                )
            return
        body = base64.b64decode(payload["body"])
        headers = dict(payload.get("headers") or {})
        headers.update(
            {HEADER_PUBLISHED_AT: repr(time.time()), HEADER_GUARDED: "1", HEADER_REPLAYED: "1"}
        )
        props = {k: v for k, v in (payload.get("properties") or {}).items() if v is not None}
        with self.app.producer_or_acquire() as producer:
            producer.publish(
                body,
                exchange=payload.get("exchange") or "",
                routing_key=payload.get("routing_key") or entry.task,
                headers=headers,
                content_type=payload.get("content_type"),
                content_encoding=payload.get("content_encoding"),
                retry=True,
                **props,
            )


def installation_of(app: Any) -> Installation | None:
    """The `Installation` of ``app``, if `install` was called on it."""
    return cast("Installation | None", getattr(app, "_maintenance_guard", None))


def install(app: Celery, guard: MaintenanceGuard | None = None) -> MaintenanceGuard:
    """Connect the guard to ``app``: publish refusal, worker re-check, in-flight, hooks.

    Without ``guard``, one is made from ``app.conf``'s ``maintenance_guard_*`` keys
    (`GuardSettings` fields, e.g. ``maintenance_guard_redis_url``,
    ``maintenance_guard_task_operations``). Idempotent; returns the guard in use.
    Raises `InvalidInput` for bad settings or a `GuardedTask` with an unknown operation.
    """
    existing = installation_of(app)
    if existing is not None:
        return existing.guard
    settings = GuardSettings.from_mapping(app.conf, CONFIG_PREFIX)
    if guard is None:
        from dataclasses import asdict

        values = {k: v for k, v in asdict(settings).items() if k != "redis_url"}
        guard = MaintenanceGuard.from_url(settings.redis_url, **values)
    elif settings.task_operations:
        for operation in settings.task_operations.values():
            guard.catalog.require(operation)  # all valid before the guard changes
        for pattern, operation in settings.task_operations.items():
            guard.task_operations.add(pattern, operation)
    policy = guard.settings.worker_policy
    inst = Installation(
        app=app,
        guard=guard,
        registry=InflightRegistry(guard.store, guard.settings.heartbeat_timeout),
        deferred=DeferredQueue(guard.store),
        heartbeat=Heartbeat(
            InflightRegistry(guard.store, guard.settings.heartbeat_timeout),
            guard.settings.heartbeat_interval,
        ),
        worker_policy=policy,
    )
    for task in list(app._tasks.values()) if hasattr(app, "_tasks") else []:
        _validate_task(guard, task)
    app._maintenance_guard = inst
    guard.celery_app = app  # emergency mode drives this app's workers
    _patch_send_task(app, inst)
    _patch_canvas()
    _connect_signals(inst)
    app.steps["consumer"].add(GuardConsumerStep)

    def on_change(status: MaintenanceStatus) -> None:
        if not status.is_active:
            threading.Thread(target=_replay_quietly, args=(inst,), daemon=True).start()

    guard.add_listener(on_change)
    from .emergency_worker import install_worker_hooks

    # Emergency mode: worker control commands, terminated jobs refused, resume after.
    install_worker_hooks(app, guard)
    return guard


def _replay_quietly(inst: Installation) -> None:
    try:
        inst.replay_deferred()
    except (StoreUnavailable, MaintenanceGuardError) as exc:
        logger.warning(
            "could not replay deferred submissions: %s", exc, extra={"mg_event": "replay_failed"}
        )
    except Exception:
        logger.exception("replaying deferred submissions failed")


def _validate_task(guard: MaintenanceGuard, task: Any) -> None:
    operation = getattr(task, "operation", None)
    if operation is not None:
        guard.catalog.require(operation)
    policy = getattr(task, "on_maintenance", None)
    if policy is not None:
        check_policy(policy)


# ---------------------------------------------------------------------- publish side


@contextmanager
def _flag(name: str, value: Any = True) -> Iterator[None]:
    old = getattr(_local, name, None)
    setattr(_local, name, value)
    try:
        yield
    finally:
        setattr(_local, name, old)


def _replaying() -> Any:
    return _flag("replaying")


def _is_running_work(app: Any, name: str, task_id: str | None, parent_id: str | None) -> bool:
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


def _stamp(options: dict[str, Any], *, running_work: bool) -> None:
    """Stamp the guard's headers through the ``headers`` option, which Celery merges into
    the message headers (cheaper than a ``before_task_publish`` receiver)."""
    headers = dict(options.get("headers") or ())
    headers[HEADER_PUBLISHED_AT] = repr(time.time())
    headers[HEADER_GUARDED] = "1"
    if running_work:
        headers[HEADER_RUNNING_WORK] = "1"
    options["headers"] = headers


def _maintenance_off(guard: MaintenanceGuard) -> bool:
    """The publish fast path: nothing is refused while maintenance is off, and a message
    published now predates any maintenance that starts later, so it needs no running-work
    mark either. Memory only; starts the guard's watcher on first use."""
    guard.start()
    return guard.current().mode is None


def _patch_send_task(app: Celery, inst: Installation) -> None:
    original = app.send_task

    @functools.wraps(original)
    def send_task(name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        policy = options.pop("on_maintenance", None)
        if _maintenance_off(inst.guard):
            if policy is not None:
                check_policy(policy)
            _stamp(options, running_work=False)
            return original(name, args, kwargs, **options)
        task_type = options.get("task_type") or app._tasks.get(name)
        if policy is None:
            policy = getattr(task_type, "on_maintenance", None) or "refuse"
        check_policy(policy)
        running = _is_running_work(app, name, options.get("task_id"), options.get("parent_id"))
        if not getattr(_local, "checked", False) and not getattr(_local, "replaying", False):
            operation = inst.operation_of(name, task_type)
            try:
                refuse_publish(inst, name, operation, running_work=running)
            except MaintenanceActive as refused:
                if policy != "defer":
                    _log_refusal(name, operation, refused)
                    raise
                return _defer_call(inst, name, args, kwargs, operation, options, refused)
            # Callbacks, the rest of a chain, a chord body: published later by a worker,
            # so they are checked now, with the task itself.
            refuse_names(inst, _option_names(options), running_work=running)
        _stamp(options, running_work=running)
        return original(name, args, kwargs, **options)

    app.send_task = send_task


def _log_refusal(name: str, operation: str | None, refused: MaintenanceActive) -> None:
    logger.warning(
        "refused to publish %s during %s maintenance",
        name,
        refused.mode,
        extra={"mg_event": "publish_refused", "mg_task": name, "mg_operation": operation},
    )


_CALL_OPTIONS = (
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
)


def _defer_call(
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
    kept = {}
    for key in _CALL_OPTIONS:
        value = options.get(key)
        if value is None:
            continue
        if key == "queue" and not isinstance(value, str):
            value = getattr(value, "name", None)
        if key == "exchange" and not isinstance(value, str):
            value = getattr(value, "name", None)
        if value is not None:
            kept[key] = value
    try:
        payload = {
            "args": kombu_dumps(list(args or ())),
            "kwargs": kombu_dumps(dict(kwargs or {})),
            "options": kombu_dumps(kept),
        }
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
        inst.deferred.park(entry)
    except StoreUnavailable as exc:
        logger.warning("cannot defer %s, refusing instead: %s", name, exc)
        raise refused from None
    logger.info(
        "deferred %s[%s] until maintenance ends",
        name,
        task_id,
        extra={"mg_event": "deferred", "mg_task": name, "mg_task_id": task_id},
    )
    result_cls = options.get("result_cls") or inst.app.AsyncResult
    return result_cls(task_id)


def _signature_names(sig: Any) -> Iterator[str]:
    """Every task name a canvas would publish, now or later (links, chain, chord body)."""
    if sig is None:
        return
    if isinstance(sig, dict) and not isinstance(sig, _canvas.Signature):
        sig = _canvas.signature(sig)
    if isinstance(sig, (list, tuple)):
        for item in sig:
            yield from _signature_names(item)
        return
    if isinstance(sig, _canvas._chord):
        yield from _signature_names(list(sig.tasks))
        yield from _signature_names(sig.body)
    elif isinstance(sig, (_canvas._chain, _canvas.group)):
        yield from _signature_names(list(sig.tasks))
    elif isinstance(sig, (_canvas.xmap, _canvas.xstarmap, _canvas.chunks)):
        yield from _signature_names(sig.kwargs.get("task"))
    else:
        yield str(sig.task)
    options = sig.options if isinstance(sig, _canvas.Signature) else {}
    for key in ("link", "link_error", "chain"):
        yield from _signature_names(options.get(key))
    chord = options.get("chord")
    if chord:
        yield from _signature_names(chord)


def _option_names(options: dict[str, Any]) -> Iterator[str]:
    for key in ("link", "link_error", "chain", "chord"):
        yield from _signature_names(options.get(key))


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
            _log_refusal(name, operation, refused)
            raise


def refuse_canvas(inst: Installation, sig: Any, options: dict[str, Any]) -> None:
    """Raise `MaintenanceActive` if any task of the canvas ``sig`` (with the call's
    ``options``: links, chain, chord) is refused now."""
    running = _is_running_work(inst.app, "", options.get("task_id"), options.get("parent_id"))
    names = itertools.chain(_signature_names(sig), _option_names(options))
    refuse_names(inst, names, running_work=running)


def _guard_canvas_method(cls: type, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def apply_async(self: Any, *args: Any, **options: Any) -> Any:
        inst = installation_of(self._app) or installation_of(_safe_app(self))
        if inst is None or getattr(_local, "checked", False) or getattr(_local, "replaying", False):
            return original(self, *args, **options)
        if type(self) is _canvas.Signature:
            # One task: send_task checks it with its links (and honours on_maintenance).
            return original(self, *args, **options)
        refuse_canvas(inst, self, options)
        # chord(header)(body) passes the body inside the kwargs argument of apply_async.
        call_kwargs = args[1] if len(args) > 1 else options.get("kwargs")
        if isinstance(self, _canvas._chord) and isinstance(call_kwargs, dict):
            running = _is_running_work(
                inst.app, "", options.get("task_id"), options.get("parent_id")
            )
            refuse_names(inst, _signature_names(call_kwargs.get("body")), running_work=running)
        with _flag("checked", True):
            return original(self, *args, **options)

    apply_async._mg_guarded = True  # type: ignore[attr-defined]
    return apply_async


def _safe_app(sig: Any) -> Any:
    try:
        return sig.app
    except Exception:
        return None


def _patch_canvas() -> None:
    for cls in (
        _canvas.Signature,
        _canvas._chain,
        _canvas.group,
        _canvas._chord,
        _canvas._basemap,
        _canvas.chunks,
    ):
        method = cls.__dict__.get("apply_async")
        if method is None or getattr(method, "_mg_guarded", False):
            continue
        cls.apply_async = _guard_canvas_method(cls, method)


class GuardedTask(Task):  # type: ignore[misc]
    """Base class declaring a task's operation; refuses in ``apply_async`` before any
    message is built.

    ``@app.task(base=GuardedTask, operation="caption_generation", on_maintenance="defer")``.
    Raises `MaintenanceActive` when refused, unless ``on_maintenance="defer"`` (task
    option or ``apply_async`` keyword), which parks the submission for replay.
    """

    operation: str | None = None
    on_maintenance: str = "refuse"
    # Re-enqueued by `maintenance-guard recover` if an emergency terminates it.
    recoverable: bool = False

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        inst = installation_of(self.app)
        if inst is None:
            raise MaintenanceGuardError(
                f"{self.name} uses GuardedTask but install(app, guard) was not called"
            )
        policy = check_policy(options.pop("on_maintenance", None) or self.on_maintenance)
        if self.operation is not None and self.operation not in inst.guard.catalog:
            inst.guard.catalog.require(self.operation)  # a typo is an error even when off
        if (
            _maintenance_off(inst.guard)
            or getattr(_local, "checked", False)
            or getattr(_local, "replaying", False)
        ):
            return super().apply_async(args, kwargs, **options)
        operation = inst.operation_of(self.name, self)
        running = _is_running_work(
            self.app, self.name, options.get("task_id"), options.get("parent_id")
        )
        try:
            refuse_publish(inst, self.name, operation, running_work=running)
        except MaintenanceActive as refused:
            if policy != "defer":
                _log_refusal(self.name, operation, refused)
                raise
            return _defer_call(inst, self.name, args, kwargs, operation, options, refused)
        refuse_names(inst, _option_names(options), running_work=running)
        with _flag("checked", True):
            return super().apply_async(args, kwargs, **options)


# ---------------------------------------------------------------------- worker side


def worker_verdict(
    inst: Installation, name: str, headers: dict[str, Any], *, dry_run: bool = False
) -> str:
    """``"run"``, ``"defer"`` or ``"reject"`` for a message the worker received now.

    Normal mode runs messages published before maintenance began (by their
    ``mg_published_at`` stamp) and running work; a message without the stamp was
    published by a producer without the guard at an unknown time and is not run while
    its operation is blocked. Emergency mode runs no blocked message. ``dry_run``
    decides without counting or recording the attempt.
    """
    guard = inst.guard
    status = guard.current()
    if not status.is_active:
        return "run"
    operation = inst.operation_of(name, inst.app._tasks.get(name))
    running_work = headers.get(HEADER_RUNNING_WORK) == "1"
    published = _float(headers.get(HEADER_PUBLISHED_AT))
    started = status.started_at
    before = published is not None and started is not None and published < started
    if status.mode is MaintenanceMode.NORMAL and (running_work or before):
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


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _park_message(inst: Installation, message: Any, name: str, reason: str) -> None:
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
    inst.deferred.park(
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


def _hold_back(
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
            _park_message(inst, message, name, inst.guard.current().reason)
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


def _safe_verdict(inst: Installation, name: str, headers: dict[str, Any]) -> str:
    try:
        if worker_verdict(inst, name, headers, dry_run=True) != "run":
            # Holding back costs Redis writes anyway: first make sure the verdict is not
            # based on a stale view (a replayer that saw maintenance end publishes before
            # this worker's notification arrives; parking its message again would run it
            # out of order).
            inst.guard.refresh()
        return worker_verdict(inst, name, headers)
    except Exception:  # the guard must never take the worker down
        logger.exception("maintenance re-check failed for %s; running it", name)
        return "run"


def _guard_handler(
    inst: Installation,
    name: str,
    handler: Callable[..., Any],
    connection_errors: tuple[type[BaseException], ...],
) -> Callable[..., Any]:
    def on_message(
        message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any
    ) -> Any:
        verdict = _safe_verdict(inst, name, message.headers or {})
        if verdict == "run":
            return handler(message, body, ack, reject, callbacks, **kw)
        return _hold_back(
            inst,
            verdict,
            name,
            message,
            lambda: ack(logger, connection_errors),
            lambda requeue: reject(logger, connection_errors, requeue),
        )

    on_message._mg_guarded = True  # type: ignore[attr-defined]
    return on_message


def _guard_eta_requests(inst: Installation, on_task_request: Callable[..., Any]) -> Any:
    """Check a request with an ETA again when it comes due (it was checked on receipt,
    maybe before maintenance began)."""
    from celery.worker import state as worker_state

    def on_request(request: Any, *args: Any, **kwargs: Any) -> Any:
        if request.eta is None or request.name.startswith("celery."):
            return on_task_request(request, *args, **kwargs)
        verdict = _safe_verdict(inst, request.name, dict(request.request_dict))
        if verdict == "run":
            return on_task_request(request, *args, **kwargs)
        worker_state.task_ready(request)
        return _hold_back(
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
            c.strategies[name] = _guard_handler(inst, name, handler, tuple(c.connection_errors))
        if not getattr(c.on_task_request, "_mg_guarded", False):
            c.on_task_request = _guard_eta_requests(inst, c.on_task_request)


# ---------------------------------------------------------------------- signals


def _connect_signals(inst: Installation) -> None:
    app = inst.app

    def ours(sender: Any) -> bool:
        task_app = getattr(sender, "app", None) or getattr(sender, "_app", None)
        return task_app is app

    def job_started(
        sender: Any = None, task_id: str | None = None, task: Any = None, **_: Any
    ) -> None:
        if task is None or task_id is None or not ours(task) or task.name.startswith("celery."):
            return
        job = InflightJob(
            id=task_id,
            name=task.name,
            operation=inst.operation_of(task.name, task),
            worker=str(
                getattr(task.request, "hostname", None) or inst.hostname or socket.gethostname()
            ),
            pid=os.getpid(),
            started_at=time.time(),
        )
        inst.heartbeat.add(task_id)
        try:
            inst.registry.start(job)
        except StoreUnavailable as exc:
            logger.warning("cannot record in-flight job %s: %s", task_id, exc)

    def job_ended(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        if task_id is None or (sender is not None and not ours(sender)):
            return
        inst.heartbeat.discard(task_id)
        try:
            inst.registry.finish([task_id])
        except StoreUnavailable as exc:
            logger.warning("cannot forget in-flight job %s: %s", task_id, exc)

    def job_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
        task_id = getattr(request, "id", None)
        if task_id is not None:
            job_ended(task_id=task_id)

    def worker_ready(sender: Any = None, **_: Any) -> None:
        hostname = getattr(sender, "hostname", None) or socket.gethostname()
        inst.hostname = hostname
        inst.guard.refresh()
        try:
            cleared = inst.registry.clear_worker(hostname)
            inst.registry.register_worker(hostname, {"pid": os.getpid(), "started_at": time.time()})
        except StoreUnavailable as exc:
            logger.warning("cannot register worker %s: %s", hostname, exc)
            return
        if cleared:
            logger.info(
                "cleared %d stale in-flight records of %s",
                len(cleared),
                hostname,
                extra={"mg_event": "stale_cleared", "mg_worker": hostname},
            )
        threading.Thread(target=_replay_quietly, args=(inst,), daemon=True).start()

    def pool_process_started(sender: Any = None, **_: Any) -> None:
        # A forked pool process inherits a snapshot that no watcher keeps fresh: read
        # the state now and watch from here on.
        inst.guard.refresh()
        inst.guard.start()

    def worker_shutdown(sender: Any = None, **_: Any) -> None:
        hostname = inst.hostname or getattr(sender, "hostname", None)
        if not hostname:
            return
        try:
            inst.registry.clear_worker(hostname)
            inst.registry.unregister_worker(hostname)
        except StoreUnavailable as exc:
            logger.warning("cannot unregister worker %s: %s", hostname, exc)

    pairs: list[tuple[Any, Callable[..., Any]]] = [
        (signals.task_prerun, job_started),
        (signals.task_postrun, job_ended),
        (signals.task_failure, job_ended),
        (signals.task_revoked, job_revoked),
        (signals.worker_ready, worker_ready),
        (signals.worker_process_init, pool_process_started),
        (signals.worker_shutdown, worker_shutdown),
    ]
    for signal, receiver in pairs:
        signal.connect(receiver, weak=False)
    inst.receivers = pairs


__all__ = [
    "GuardConsumerStep",
    "GuardedTask",
    "Installation",
    "install",
    "installation_of",
    "refuse_canvas",
    "refuse_publish",
    "worker_verdict",
]
