"""Worker side of emergency mode (imports Celery).

- Remote-control commands the emergency runner calls: list running jobs with what
  recovery needs, tell which jobs still occupy a pool process, SIGKILL those.
- Terminated jobs never run again by themselves: their ids are added to the worker's
  revoked set at start-up and whenever the maintenance state changes, so a redelivered
  message (``acks_late`` + ``task_reject_on_worker_lost``, a worker restart, a visibility
  timeout) is acknowledged and dropped by Celery before it runs.
- A worker pauses itself while an emergency run lasts and consumes its queues again
  when it ends (`consumers.ConsumerGate`, which also applies queue pauses); the
  emergency run only watches its pause records.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from celery import signals
from celery.worker import state as worker_state
from celery.worker.control import inspect_command

from ..emergency import (
    CMD_ACTIVE,
    CMD_KILL,
    CMD_RESERVED,
    CMD_RUNNING,
    EmergencyRecords,
    configure_celery,
    json_safe,
)
from ..errors import StoreUnavailable
from ..guard import MaintenanceGuard
from ..inflight import InflightRegistry
from ..status import MaintenanceStatus
from ..store import RedisStore
from .consumers import RECONCILE_SECONDS, ConsumerGate, PausedAtStartStep

logger = logging.getLogger("maintenance_guard")


# ---------------------------------------------------------------------------- commands


def _pool_jobs(state: Any) -> Iterator[tuple[str, list[int], Any]]:
    """(task id, pids, job) for every job a prefork pool has not finished."""
    pool = getattr(getattr(state.consumer, "pool", None), "_pool", None)
    cache = getattr(pool, "_cache", None)
    if cache is None:
        for request in list(worker_state.active_requests):
            yield request.id, [request.worker_pid] if request.worker_pid else [], None
        return
    for job in list(cache.values()):
        task_id = getattr(job, "correlation_id", None)
        if task_id is not None and not job.ready():
            yield task_id, list(job.worker_pids()), pool


@inspect_command(name=CMD_ACTIVE)  # type: ignore[untyped-decorator]
def maintenance_guard_active(state: Any, **_: Any) -> dict[str, Any]:
    """Running jobs with their arguments, recoverability and operation."""
    jobs = []
    for request in list(worker_state.active_requests):
        info = request.info()
        task = state.app.tasks.get(request.name)
        info["args"] = json_safe(info.get("args"))
        info["kwargs"] = json_safe(info.get("kwargs"))
        info["recoverable"] = bool(getattr(task, "recoverable", False))
        info["operation"] = getattr(task, "operation", None)
        info["delivery_info"] = {
            k: (info.get("delivery_info") or {}).get(k) for k in ("exchange", "routing_key")
        }
        jobs.append(info)
    return {"jobs": jobs}


@inspect_command(name=CMD_RESERVED)  # type: ignore[untyped-decorator]
def maintenance_guard_reserved(state: Any, **_: Any) -> dict[str, Any]:
    """Messages this worker holds that have not started (prefetched, waiting for a pool
    process or their ETA), and the queues it consumes (for `drain`)."""
    active = {r.id for r in list(worker_state.active_requests)}
    reserved = []
    for request in list(worker_state.reserved_requests):
        if request.id in active:
            continue
        task = state.app.tasks.get(request.name)
        operation = getattr(task, "operation", None)
        inst = getattr(state.app, "_maintenance_guard", None)
        if operation is None and inst is not None:
            operation = inst.operation_of(request.name, task)
        reserved.append({"id": request.id, "name": request.name, "operation": operation})
    task_consumer = getattr(state.consumer, "task_consumer", None)
    queues = [q.name for q in task_consumer.queues] if task_consumer is not None else []
    return {"reserved": reserved, "queues": queues}


@inspect_command(name=CMD_RUNNING, args=[("task_ids", list)])  # type: ignore[untyped-decorator]
def maintenance_guard_running(
    state: Any, task_ids: list[str] | None = None, **_: Any
) -> dict[str, Any]:
    """Which of ``task_ids`` still run in a live pool process (terminated or not).

    A job whose process is dead (or a zombie the pool has not reaped yet) is gone, even
    before the pool's own bookkeeping notices.
    """
    wanted = set(task_ids or ())
    running = {
        task_id: pids[0] if pids else 0
        for task_id, pids, _pool in _pool_jobs(state)
        if task_id in wanted and (not pids or any(_alive(pid) for pid in pids))
    }
    return {"running": running}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            pass
        return True


@inspect_command(name=CMD_KILL, args=[("task_ids", list)])  # type: ignore[untyped-decorator]
def maintenance_guard_kill(
    state: Any, task_ids: list[str] | None = None, **_: Any
) -> dict[str, Any]:
    """SIGKILL the pool processes still running ``task_ids``."""
    wanted = set(task_ids or ())
    killed: dict[str, int] = {}
    for task_id, pids, pool in _pool_jobs(state):
        if task_id not in wanted:
            continue
        for pid in pids:
            try:
                if pool is not None:
                    pool.terminate_job(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
                killed[task_id] = pid
            except OSError:
                continue
    logger.warning("SIGKILLed %d job process(es)", len(killed), extra={"mg_event": "jobs_killed"})
    return {"killed": killed}


# ---------------------------------------------------------------------------- hooks


def refuse_terminated(records: EmergencyRecords) -> int:
    """Add every terminated job id to this worker's revoked set; returns how many."""
    ids = records.terminated_ids()
    for task_id in ids:
        worker_state.revoked.add(task_id)
    return len(ids)


def install_worker_hooks(app: Any, guard: MaintenanceGuard) -> list[tuple[Any, Any]]:
    """Connect the emergency's worker side for ``app`` (before the worker starts;
    idempotent). Returns the (signal, receiver) pairs it connected."""
    if getattr(app, "_mg_emergency_hooks", False):
        return []
    app._mg_emergency_hooks = True
    configure_celery(guard, app)  # emergencies of this guard drive this app's workers
    records = EmergencyRecords(guard.store)
    app._mg_emergency = (guard, records)
    app.steps["consumer"].add(PausedAtStartStep)
    registry = InflightRegistry(guard.store) if isinstance(guard.store, RedisStore) else None
    main_pid = os.getpid()

    def follow(gate: ConsumerGate, status: MaintenanceStatus | None, changed: bool) -> None:
        if os.getpid() != main_pid:
            return  # a forked pool process; only the worker's main process acts
        try:
            if changed:
                refuse_terminated(records)
            gate.follow(status)
        except StoreUnavailable as exc:
            logger.warning("emergency worker hook: %s", exc, extra={"mg_event": "store_error"})

    def on_ready(sender: Any = None, **_: Any) -> None:
        nonlocal main_pid
        if getattr(sender, "app", None) is not app:
            return
        main_pid = os.getpid()
        hostname = str(sender.hostname)

        def note_paused(names: list[str]) -> None:
            if registry is not None:
                try:
                    registry.update_worker(hostname, paused=names)
                except StoreUnavailable as exc:
                    logger.warning("cannot note paused queues: %s", exc)

        gate = ConsumerGate(sender, guard, records, note_paused)
        gate.paused_at_start(*getattr(sender, "_mg_paused_at_start", ([], False)))
        # Listen first, then look: a change between the two is never missed.
        guard.add_listener(lambda status: follow(gate, status, True))
        guard.add_periodic(lambda: follow(gate, None, False), RECONCILE_SECONDS)
        guard.refresh()
        follow(gate, None, True)

    def on_revoked(
        sender: Any = None, request: Any = None, terminated: bool = False, **_: Any
    ) -> None:
        if terminated or request is None or os.getpid() != main_pid:
            return
        try:
            if request.id in set(records.terminated_ids()):
                records.note_skipped(request.id, getattr(request, "hostname", "") or "")
                logger.warning(
                    "dropped a redelivered message of terminated job %s",
                    request.id,
                    extra={"mg_event": "terminated_redelivery_dropped", "mg_task_id": request.id},
                )
        except StoreUnavailable:
            pass

    signals.worker_ready.connect(on_ready, weak=False)
    signals.task_revoked.connect(on_revoked, weak=False)
    return [(signals.worker_ready, on_ready), (signals.task_revoked, on_revoked)]


# ---------------------------------------------------------------------------- tasks


@contextmanager
def cleanup_on_terminate(cleanup: Callable[[], object]) -> Iterator[None]:
    """Inside a task: run ``cleanup`` if the emergency sends SIGTERM, then end the process.

    The process still ends by SIGTERM afterwards, as Celery expects of a terminated job.
    Restores the previous handler on exit.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        try:
            cleanup()
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
