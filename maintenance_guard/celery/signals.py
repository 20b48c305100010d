"""Signal receivers (they only observe): in-flight tracking, jobs finished in a
maintenance window, worker registration, pool process start and end.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from celery import signals
from celery.exceptions import WorkerLostError

from ..errors import StoreUnavailable
from ..inflight import InflightJob
from .installation import Installation
from .start import guard_task_start

logger = logging.getLogger("maintenance_guard")


def connect_signals(inst: Installation) -> None:
    app = inst.app

    def ours(sender: Any) -> bool:
        task_app = getattr(sender, "app", None) or getattr(sender, "_app", None)
        return task_app is app

    def worker_of(task: Any) -> str:
        # The worker's name as Celery gives it to the running task (its request).
        hostname = getattr(getattr(task, "request", None), "hostname", None)
        return str(hostname or inst.hostname or socket.gethostname())

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
                worker=worker_of(task),
                pid=os.getpid(),
                started_at=inst.guard.now(),
            )
        )

    def job_ended(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        if task_id is None or (sender is not None and not ours(sender)):
            return
        inst.tracker.finished(task_id)

    def job_failed(
        sender: Any = None, task_id: str | None = None, exception: Any = None, **_: Any
    ) -> None:
        if not isinstance(exception, WorkerLostError):
            job_ended(sender=sender, task_id=task_id)
            return
        # Sent by a prefork worker's main process: the pool process running the job died
        # (SIGKILL, the OOM killer) and Celery did not requeue it. Recorded as lost at
        # once, even if the job died before its own start was written.
        if task_id is None or sender is None or not ours(sender):
            return
        inst.tracker.lost(
            InflightJob(
                id=task_id,
                name=sender.name,
                operation=inst.operation_of(sender.name, sender),
                worker=worker_of(sender),
                pid=0,
                started_at=0.0,
            )
        )

    def job_finished(
        sender: Any = None, task: Any = None, state: str | None = None, **_: Any
    ) -> None:
        # Counted in the open maintenance window's tally (memory; flushed with the
        # attempt counters). A run that ends in a retry is not a finished job.
        task = task if task is not None else sender
        if task is None or not ours(task) or state == "RETRY" or task.name.startswith("celery."):
            return
        inst.guard.note_job_finished(inst.operation_of(task.name, task))

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
            **consumed_queues(sender),
        }
        if inst.registry is None:  # a guard on a MemoryStore: nothing to register
            inst.request_replay()
            return
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
        inst.guard.catch_up(from_now_on=True)  # it does before each task starts (start.py)
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
        if not hostname or inst.registry is None:
            return
        try:
            inst.registry.clear_worker(hostname)
            inst.registry.unregister_worker(hostname)
        except StoreUnavailable as exc:
            logger.warning("cannot unregister worker %s: %s", hostname, exc)

    def beat_started(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            inst.in_beat = True  # for a Celery whose beat does not mark what it sends
            inst.guard.refresh()  # know the pauses before the first entry is due

    pairs: list[tuple[Any, Callable[..., Any]]] = [
        (signals.task_prerun, job_started),
        (signals.task_postrun, job_ended),
        (signals.task_postrun, job_finished),
        (signals.task_failure, job_failed),
        (signals.task_revoked, job_revoked),
        (signals.worker_init, worker_init),
        (signals.worker_ready, worker_ready),
        (signals.worker_process_init, pool_process_started),
        (signals.worker_process_shutdown, pool_process_ending),
        (signals.worker_shutdown, worker_shutdown),
        (signals.beat_init, beat_started),
    ]
    for signal, receiver in pairs:
        signal.connect(receiver, weak=False)
    inst.receivers = pairs


def consumed_queues(consumer: Any) -> dict[str, list[str]]:
    """The queues a starting worker consumes (``queues``) and those of them it does not
    consume now because they are paused (``paused``), for the worker registry."""
    paused_at_start: list[Any] = getattr(consumer, "_mg_paused_at_start", ([], False))[0]
    paused = sorted(q.name for q in paused_at_start)
    task_consumer = getattr(consumer, "task_consumer", None)
    current = [q.name for q in task_consumer.queues] if task_consumer is not None else []
    return {"queues": sorted(set(current) | set(paused)), "paused": paused}
