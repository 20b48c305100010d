"""`install(app, guard)`: connect the publish refusal, the worker re-check, the start
check, the in-flight hooks and the emergency worker side to one Celery app.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from celery import Celery

from ..admin_signature import AdminSigner
from ..brokers import broker_key, broker_of
from ..deferred import DeferredQueue, check_policy
from ..errors import StoreUnavailable
from ..guard import MaintenanceGuard
from ..inflight import InflightRegistry
from ..settings import GuardSettings
from ..status import MaintenanceStatus
from ..store import RedisStore
from ..tracking import InflightTracker
from .canvas import patch_canvas
from .context import CONFIG_PREFIX, DEFERRED_SWEEP_SECONDS
from .emergency import install_worker_hooks
from .installation import Installation, installation_of
from .publish import expected_runtime_of, patch_send_task
from .signals import connect_signals
from .worker import GuardConsumerStep

logger = logging.getLogger("maintenance_guard")


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
    broker = broker_of(app)
    inst = Installation(
        app=app, guard=guard, worker_policy=guard.settings.worker_policy, broker=broker
    )
    store = guard.store
    if isinstance(store, RedisStore):
        inst.registry = InflightRegistry(store, guard.settings.heartbeat_timeout, now=guard.now)
        inst.deferred = DeferredQueue(store, broker_key(broker))
        inst.tracker = InflightTracker(inst.registry, guard.settings.heartbeat_interval)
        inst.signer = AdminSigner(store)
    # else (a MemoryStore: an application's unit tests): the in-process defaults of
    # Installation, no in-flight records, parked work in memory.
    for task in list(app._tasks.values()) if hasattr(app, "_tasks") else []:
        validate_task(guard, task)
    app._maintenance_guard = inst
    patch_send_task(app, inst)
    patch_canvas()
    connect_signals(inst)
    app.steps["consumer"].add(GuardConsumerStep)

    def on_change(status: MaintenanceStatus) -> None:
        if not status.is_active and os.getpid() == inst.sweeper_pid and not inst.closed:
            inst.request_replay()

    inst.listener = on_change
    guard.add_listener(on_change)
    if isinstance(inst.deferred, DeferredQueue):
        # Read by the watcher's poll: no round trip of its own.
        queue = inst.deferred

        def read_deferred(values: tuple[str | None, ...]) -> None:
            quietly(lambda: inst.sweep_deferred(queue.check_from(values)))()

        guard.add_poll_reader(queue.check_keys, read_deferred)
    else:
        guard.add_periodic(quietly(inst.sweep_deferred), DEFERRED_SWEEP_SECONDS)
    warn_about_other_brokers(inst)
    if isinstance(guard.store, RedisStore):  # emergencies keep their records in Redis
        # Emergency mode: worker control commands, terminated jobs refused, resume after.
        inst.receivers += install_worker_hooks(app, guard)
    return guard


def uninstall(app: Celery) -> None:
    """Undo `install` on ``app`` (for tests that make an app per test): its signal
    receivers are disconnected, ``send_task`` is Celery's own again, the guard stops
    replaying for it (a replay under way ends after the entry it is sending; waits up to
    5 s). Parked work stays where it is. A no-op if not installed."""
    inst = installation_of(app)
    if inst is None:
        return
    inst.closed = True
    if inst.replayer is not None:
        inst.replayer.stop()
    for signal, receiver in inst.receivers:
        signal.disconnect(receiver)
    inst.receivers = []
    if inst.listener is not None:
        inst.guard.remove_listener(inst.listener)
    app.__dict__.pop("send_task", None)  # the wrapper `patch_send_task` set on the instance
    app.__dict__.pop("_mg_emergency_hooks", None)
    del app._maintenance_guard


def quietly(task: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            task()
        except StoreUnavailable as exc:
            logger.debug("maintenance-guard periodic task: %s", exc)

    return run


def warn_about_other_brokers(inst: Installation) -> None:
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


def validate_task(guard: MaintenanceGuard, task: Any) -> None:
    operation = getattr(task, "operation", None)
    if operation is not None:
        guard.catalog.require(operation)
    policy = getattr(task, "on_maintenance", None)
    if policy is not None:
        check_policy(policy)
    expected_runtime_of(task)
