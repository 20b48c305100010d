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
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from celery import Celery, Task, bootsteps, signals
from celery import canvas as _canvas
from kombu.utils import json as _kombu_json
from redis.exceptions import RedisError

from .admin_signature import AdminSigner
from .brokers import broker_key, broker_of
from .deferred import DeferredEntry, DeferredQueue, Replayer, check_policy, new_entry
from .errors import DeferralUnconfirmed, MaintenanceActive, MaintenanceGuardError, StoreUnavailable
from .guard import MaintenanceGuard
from .inflight import InflightJob, InflightRegistry, InflightTracker
from .modes import MaintenanceMode
from .settings import GuardSettings
from .status import MaintenanceStatus
from .store import RedisStore, event_fields

logger = logging.getLogger("maintenance_guard")

CONFIG_PREFIX = "maintenance_guard_"
HEADER_PUBLISHED_AT = "mg_published_at"
HEADER_GUARDED = "mg_guarded"
HEADER_RUNNING_WORK = "mg_running_work"
HEADER_REPLAYED = "mg_replayed"
HEADER_ADMIN = "mg_admin"  # an admin's submission: HMAC stamp (admin_signature.py)
DEFERRED_SWEEP_SECONDS = 5.0

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
    tracker: InflightTracker
    signer: AdminSigner
    worker_policy: str
    broker: str  # the broker's address, password masked: identifies this app's queue
    hostname: str | None = None
    receivers: list[tuple[Any, Callable[..., Any]]] = field(default_factory=list)
    # The process that sweeps the deferred queue (not a forked pool or web child).
    sweeper_pid: int = field(default_factory=os.getpid)
    # Deferrals whose write timed out (it may still have landed), by task id.
    uncertain: dict[str, DeferredEntry] = field(default_factory=dict)
    # What this process last knew of the deferred queue, to notice a Redis that lost it.
    known_deferred: int = 0
    deferred_marker: str | None = None
    parked_here: deque[str] = field(default_factory=lambda: deque(maxlen=1000))
    replayer: Replayer | None = None

    def operation_of(self, name: str, task: Any = None) -> str | None:
        """The operation a task name maps to (a `GuardedTask`'s declaration first)."""
        declared = getattr(task, "operation", None) if task is not None else None
        if isinstance(declared, str) and declared:
            return declared
        return self.guard.task_operations.classify(name)

    def replay_deferred(self) -> int:
        """Replay this broker's parked submissions now if maintenance is off; returns how
        many were sent. (Replay also happens by itself, from a background thread.)"""
        if not self._maintenance_off():
            return 0
        report = self.deferred.replay(self._send_entry, keep_going=self._still_off)
        return len(report.sent)

    def request_replay(self) -> None:
        """Replay this broker's parked submissions soon, from the background thread,
        retrying with backoff until they are sent (or maintenance starts again)."""
        if self.replayer is None:
            self.replayer = Replayer(self.deferred, self._send_entry, self._maintenance_off)
        self.replayer.request()

    def park(self, entry: DeferredEntry) -> bool:
        """Park ``entry`` (idempotent by id); True if parked now, False if it already was."""
        parked = self.deferred.park(entry)
        self.parked_here.append(entry.id)
        self.known_deferred += 1
        self.deferred_marker = self.deferred.last_marker
        return parked

    def sweep_deferred(self) -> None:
        """Periodic (watcher thread): notice parked work that waits while maintenance is
        off (a replayer died, the broker was down) and a store that lost the queue."""
        if os.getpid() != self.sweeper_pid:
            return
        check = self.deferred.check()
        lost = check.marker != self.deferred_marker and self.deferred_marker is not None
        if lost and self.known_deferred > check.pending:
            self._report_lost_deferrals(check.marker)
        self.deferred_marker = check.marker
        self.known_deferred = check.pending
        if check.pending and not self.guard.current().is_active:
            self.request_replay()

    def _report_lost_deferrals(self, marker: str | None) -> None:
        lost, ids = self.known_deferred, list(self.parked_here)
        logger.warning(
            "the store lost the deferred queue of %s (Redis restarted without persistence): "
            "%d parked submission(s) this process knew of will never run%s",
            self.broker,
            lost,
            f"; parked by this process: {', '.join(ids[-20:])}" if ids else "",
            extra={"mg_event": "deferred_lost", "mg_lost": lost, "mg_task_ids": ids[-100:]},
        )
        try:
            first = self.deferred.claim_loss_report(self.deferred_marker)
            if first:
                self.guard.store.append_event(
                    event_fields(
                        "deferred_lost",
                        actor="maintenance-guard",
                        reason="Redis restarted without persistence; parked work was lost",
                        broker=self.broker,
                        known=lost,
                        task_ids=ids[-100:] or None,
                    )
                )
        except StoreUnavailable:
            pass
        self.parked_here.clear()

    def _maintenance_off(self) -> bool:
        # Read the store, not only memory: a replay started on a stale "off" would
        # publish during a new maintenance (the worker re-check would park it again).
        return not self.guard.refresh().is_active

    def _still_off(self) -> bool:
        return not self.guard.current().is_active

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
            {
                HEADER_PUBLISHED_AT: repr(self.guard.now()),
                HEADER_GUARDED: "1",
                HEADER_REPLAYED: "1",
            }
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
    store = cast(RedisStore, guard.store)
    registry = InflightRegistry(store, guard.settings.heartbeat_timeout, now=guard.now)
    broker = broker_of(app)
    inst = Installation(
        app=app,
        guard=guard,
        registry=registry,
        deferred=DeferredQueue(store, broker_key(broker)),
        tracker=InflightTracker(registry, guard.settings.heartbeat_interval),
        signer=AdminSigner(store),
        worker_policy=guard.settings.worker_policy,
        broker=broker,
    )
    for task in list(app._tasks.values()) if hasattr(app, "_tasks") else []:
        _validate_task(guard, task)
    app._maintenance_guard = inst
    _patch_send_task(app, inst)
    _patch_canvas()
    _connect_signals(inst)
    app.steps["consumer"].add(GuardConsumerStep)

    def on_change(status: MaintenanceStatus) -> None:
        if not status.is_active and os.getpid() == inst.sweeper_pid:
            inst.request_replay()

    guard.add_listener(on_change)
    guard.add_periodic(_quietly(inst.sweep_deferred), DEFERRED_SWEEP_SECONDS)
    _warn_about_other_brokers(inst)
    from .emergency_worker import install_worker_hooks

    # Emergency mode: worker control commands, terminated jobs refused, resume after.
    install_worker_hooks(app, guard)
    return guard


def _quietly(task: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            task()
        except StoreUnavailable as exc:
            logger.debug("maintenance-guard periodic task: %s", exc)

    return run


def _warn_about_other_brokers(inst: Installation) -> None:
    """Two apps on different brokers sharing one key prefix share the maintenance state
    (often intended) but each only reaches its own workers: say so loudly, once."""
    info = {"broker": inst.broker, "main": inst.app.main, "pid": os.getpid(),
            "host": socket.gethostname(), "seen_at": time.time()}  # fmt: skip
    try:
        others = inst.deferred.register(info)
    except StoreUnavailable:
        return
    recent = {
        key: other
        for key, other in others.items()
        if time.time() - float(other.get("seen_at") or 0) < 7 * 86_400
    }
    for other in recent.values():
        logger.warning(
            "key prefix %r is shared with a Celery app on another broker (%s; this app: %s). "
            "The maintenance state is shared, but deferred work is replayed and emergency "
            "commands reach workers only through each app's own broker; give each app its "
            "own maintenance_guard_key_prefix unless one switch for both is intended",
            inst.guard.store.prefix,  # type: ignore[attr-defined]
            other.get("broker"),
            inst.broker,
            extra={"mg_event": "prefix_shared", "mg_broker": inst.broker},
        )


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


def _stamp(
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
    published = repr(now)
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
        if (
            inst.uncertain
            and options.get("task_id") in inst.uncertain
            and not getattr(_local, "replaying", False)
        ):
            earlier = _resolve_resubmission(inst, options["task_id"], options)
            if earlier is not None:
                return earlier
        if _maintenance_off(inst.guard):
            if policy is not None:
                check_policy(policy)
            _stamp(options, inst.guard.now())
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
        _stamp(options, inst.guard.now(), running_work=running, inst=inst, name=name)
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
    "retries",
)


def _call_payload(args: Any, kwargs: Any, options: dict[str, Any]) -> dict[str, str]:
    """The stored form of a `send_task` call (raises TypeError for non-JSON arguments)."""
    kept = {}
    for key in _CALL_OPTIONS:
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


def _write_may_have_landed(exc: StoreUnavailable) -> bool:
    """False only when the command certainly never reached Redis (no connection)."""
    cause = exc.__cause__
    return not (isinstance(cause, (OSError, RedisError)) and "connecting" in str(cause).lower())


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
    try:
        payload = _call_payload(args, kwargs, options)
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
        parked = _park_with_retry(inst, entry)
        inst.uncertain.pop(task_id, None)  # confirmed now
    except StoreUnavailable as exc:
        if not _write_may_have_landed(exc):
            logger.warning("cannot defer %s, refusing instead: %s", name, exc)
            raise refused from None
        # The write timed out: it may land later. Say so, and make a resubmission with
        # the same id safe (parking is idempotent; see _resolve_resubmission).
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


def _park_with_retry(inst: Installation, entry: DeferredEntry) -> bool:
    """Park once; after a timeout (the write may still land) park again: idempotent."""
    try:
        return inst.park(entry)
    except StoreUnavailable as exc:
        if not _write_may_have_landed(exc):
            raise
        return inst.park(entry)


def _resolve_resubmission(inst: Installation, task_id: str, options: dict[str, Any]) -> Any:
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
    published = _float(headers.get(HEADER_PUBLISHED_AT))
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


def _safe_verdict(
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


# ---------------------------------------------------------------------- job start


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
            _refuse_start(inst, self, task_id, args, kwargs)
        return resolved(self, task_id, args, kwargs)

    before_start._mg_guarded = True  # type: ignore[attr-defined]
    cls.before_start = before_start


def _refuse_start(inst: Installation, task: Any, task_id: str, args: Any, kwargs: Any) -> None:
    from celery.exceptions import Ignore, Reject

    status = inst.guard.current()
    if status.mode is None or status.mode is MaintenanceMode.TEST:
        return  # test mode refuses nothing (its receipt re-check recorded the attempt)
    request = task.request
    headers = dict(getattr(request, "headers", None) or {})
    headers["id"] = task_id
    verdict = _safe_verdict(inst, task.name, headers, again=True)
    if verdict == "run":
        return
    acks_late = bool(getattr(request, "acks_late", None) or task.acks_late)
    extra = {"mg_event": f"start_{verdict}", "mg_task": task.name, "mg_task_id": task_id}
    if verdict == "reject":
        logger.warning("rejected %s[%s] before it started", task.name, task_id, extra=extra)
        if acks_late:
            raise Reject("maintenance", requeue=False)
        raise Ignore()
    options = _start_options(request)
    try:
        entry = new_entry(
            entry_id=task_id,
            kind="call",
            task=task.name,
            operation=inst.operation_of(task.name, task),
            source="worker-start",
            reason=inst.guard.current().reason,
            payload=_call_payload(args, kwargs, options),
        )
        _park_with_retry(inst, entry)
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
        with _replaying():
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


def _start_options(request: Any) -> dict[str, Any]:
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
        inst.tracker.started(
            InflightJob(
                id=task_id,
                name=task.name,
                operation=inst.operation_of(task.name, task),
                worker=str(
                    getattr(task.request, "hostname", None) or inst.hostname or socket.gethostname()
                ),
                pid=os.getpid(),
                started_at=inst.guard.now(),
            )
        )

    def job_ended(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        if task_id is None or (sender is not None and not ours(sender)):
            return
        inst.tracker.finished(task_id)

    def job_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
        task_id = getattr(request, "id", None)
        if task_id is not None:
            job_ended(task_id=task_id)

    def worker_init(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not app:
            return
        # Before the pool starts, so every pool process builds its tracers with it.
        for task in list(inst.app.tasks.values()):
            guard_task_start(task)

    def worker_ready(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not app:
            return
        hostname = getattr(sender, "hostname", None) or socket.gethostname()
        inst.hostname = hostname
        inst.sweeper_pid = os.getpid()
        inst.guard.refresh()
        info = {
            "pid": os.getpid(),
            "started_at": inst.guard.now(),
            "broker": inst.broker,
            "deferred_queue": inst.deferred.app,
        }
        try:
            cleared = inst.registry.clear_worker(hostname)
            inst.registry.register_worker(hostname, info)
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
        inst.request_replay()

    def pool_process_started(sender: Any = None, **_: Any) -> None:
        # A forked pool process inherits a snapshot that no watcher keeps fresh: read
        # the state now and watch from here on.
        inst.guard.refresh()
        inst.guard.start()

    def pool_process_ending(sender: Any = None, **_: Any) -> None:
        # Pool processes end with os._exit (no atexit): write what is buffered now.
        inst.tracker.flush(1.0)
        inst.guard.stop(timeout=1.0)

    def worker_shutdown(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", app) is not app:
            return
        inst.tracker.flush(1.0)
        inst.guard.flush()
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
        (signals.worker_init, worker_init),
        (signals.worker_ready, worker_ready),
        (signals.worker_process_init, pool_process_started),
        (signals.worker_process_shutdown, pool_process_ending),
        (signals.worker_shutdown, worker_shutdown),
    ]
    for signal, receiver in pairs:
        signal.connect(receiver, weak=False)
    inst.receivers = pairs


__all__ = [
    "GuardConsumerStep",
    "GuardedTask",
    "Installation",
    "broker_of",
    "guard_task_start",
    "install",
    "installation_of",
    "refuse_canvas",
    "refuse_publish",
    "worker_verdict",
]
