"""What a worker consumes: it stops consuming a queue while an emergency run lasts (every
queue) or while the queue is paused for it (`MaintenanceGuard.pause_queues`), and
consumes it again afterwards. The worker applies this itself (`ConsumerGate`); nobody
sends it ``cancel_consumer``, so a change racing a restart cannot leave it wrong.

A message of a paused queue that reaches the worker anyway (prefetched before the pause
took effect) goes back to the broker: on receipt it is rejected with requeue, and one
already handed to the pool is sent back just before it would start (`send_back_if_paused`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from celery import bootsteps

from ..emergency import EmergencyRecords, QueueSpec
from ..errors import StoreUnavailable
from ..guard import MaintenanceGuard
from ..modes import MaintenanceMode
from ..pauses import paused_queue_names
from ..status import MaintenanceStatus

logger = logging.getLogger("maintenance_guard")

RECONCILE_SECONDS = 2.0


def emergency_pause_in_effect(status: MaintenanceStatus) -> bool:
    """True while an emergency run (`guard.emergency`) keeps the workers paused.

    A plain ``enable(mode="emergency")`` refuses everything but pauses no worker (its
    workers park what they receive); only an emergency run owns the state
    (``emergency_id``).
    """
    return status.mode is MaintenanceMode.EMERGENCY and bool(status.emergency_id)


def queue_of(app: Any, delivery_info: Mapping[str, Any] | None) -> str | None:
    """The name of the queue a message was delivered from, told from its exchange and
    routing key against the app's queues (a routing key that names no declared queue is
    taken as the queue's name, as Celery's automatic queues are)."""
    info = delivery_info or {}
    routing_key = info.get("routing_key")
    if not routing_key:
        return None
    exchange = info.get("exchange") or ""
    queues = app.amqp.queues
    if routing_key in queues:
        return str(routing_key)
    for name, queue in queues.items():
        queue_exchange = getattr(queue.exchange, "name", "") or ""
        if queue.routing_key == routing_key and (not exchange or queue_exchange == exchange):
            return str(name)
    return str(routing_key)


def paused_for(guard: MaintenanceGuard, hostname: str | None) -> set[str]:
    """The queues the worker ``hostname`` must not consume now (memory only)."""
    pauses = guard.current().paused_queues
    if not pauses or not hostname:
        return set()
    return paused_queue_names(pauses, hostname, guard.now())


class ConsumerGate:
    """Makes one worker's consumption follow the state: no queue while an emergency run
    lasts, not the queues paused for it, everything else.

    Called on every state change and every few seconds (a worker that was hung, or
    missed a change, catches up), from any thread: decisions are serialised here, and
    the consumer applies them in order on its own event loop (as Celery's
    ``add_consumer``/``cancel_consumer`` commands do). The emergency run watches the
    pause records this writes (`EmergencyRecords`); ``on_paused`` is told the names of
    the queues not consumed after each change (for the worker registry).
    """

    def __init__(
        self,
        consumer: Any,
        guard: MaintenanceGuard,
        records: EmergencyRecords,
        on_paused: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self.guard = guard
        self.records = records
        self.on_paused = on_paused
        self.hostname = str(consumer.hostname)
        self._lock = threading.Lock()
        self.cancelled: dict[str, QueueSpec] = {}
        self.emergency = False  # the emergency's pause record is written
        # A read found no pause record for this worker: only this gate writes one, so
        # the periodic catch-up need not read it again until it does.
        self.record_cleared = False
        # Every queue this worker was seen consuming: a pause also covers one whose
        # re-add is still waiting on the event loop.
        self.known: list[QueueSpec] = []

    @property
    def paused(self) -> list[QueueSpec]:
        """The queues this worker does not consume now."""
        return list(self.cancelled.values())

    def follow(self, status: MaintenanceStatus | None = None) -> None:
        """Pause or resume to match ``status`` (default: the current state)."""
        with self._lock:
            status = status or self.guard.current()
            self._learn_queues()
            if emergency_pause_in_effect(status):
                target = {q.name for q in self.known}
                if not self.emergency and target:
                    # Recorded first: whoever looks (the emergency run, a later resume
                    # after a restart) finds the record before the pause takes effect.
                    self.record_cleared = False
                    self.records.set_cancelled(self.hostname, list(self.known))
                    self.emergency = True
            else:
                target = paused_queue_names(status.paused_queues, self.hostname, self.guard.now())
                self._end_emergency_pause(target)
            self._apply(target)

    def paused_at_start(self, queues: list[QueueSpec], emergency: bool) -> None:
        """The consumer step cancelled ``queues`` before the first fetch (see
        `PausedAtStartStep`)."""
        with self._lock:
            self.cancelled = {q.name: q for q in queues}
            self.known = list(queues)
            self.emergency = emergency

    def _learn_queues(self) -> None:
        task_consumer = getattr(self.consumer, "task_consumer", None)
        if task_consumer is None:
            return
        for raw in list(task_consumer.queues):
            spec = QueueSpec.from_celery(raw.as_dict(recurse=True))
            if spec.name not in {q.name for q in self.known}:
                self.known.append(spec)

    def _end_emergency_pause(self, still_paused: set[str]) -> None:
        """After an emergency: take back the queues its record holds (also those of this
        worker's earlier life, if it restarted during the emergency) and mark it resumed."""
        if self.record_cleared and not self.emergency:
            return
        recorded, token = self.records.pause_state(self.hostname)
        if not recorded and not self.emergency:
            self.record_cleared = True
            return
        for q in recorded:
            if q.name not in {k.name for k in self.known}:
                self.known.append(q)
            if q.name not in still_paused:
                self.cancelled.setdefault(q.name, q)  # so that `_apply` adds it back
        names = [q.name for q in recorded if q.name not in still_paused]
        if not recorded:
            names = [n for n in self.cancelled if n not in still_paused]
        self.records.mark_resumed(self.hostname, names, token)
        self.emergency = False

    def _apply(self, target: set[str]) -> None:
        by_name = {q.name: q for q in self.known}
        stop = [by_name[n] for n in sorted(target) if n in by_name and n not in self.cancelled]
        start = [q for n, q in sorted(self.cancelled.items()) if n not in target]
        for q in stop:
            self.consumer.call_soon(self.consumer.cancel_task_queue, q.name)
            self.cancelled[q.name] = q
        for q in start:
            self.consumer.call_soon(
                self.consumer.add_task_queue,
                q.name,
                q.exchange or None,
                q.exchange_type,
                q.routing_key or None,
            )
            del self.cancelled[q.name]
        if stop:
            logger.warning(
                "not consuming %s (%s)",
                ", ".join(q.name for q in stop),
                "an emergency is under way" if self.emergency else "paused",
                extra={"mg_event": "consumers_cancelled", "mg_worker": self.hostname},
            )
        if start:
            logger.info(
                "consuming again: %s",
                ", ".join(q.name for q in start),
                extra={"mg_event": "consumers_resumed", "mg_worker": self.hostname},
            )
        if (stop or start) and self.on_paused is not None:
            self.on_paused(sorted(self.cancelled))


class PausedAtStartStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer step: a worker (re)starting during an emergency consumes nothing, and
    one starting while queues are paused for it does not consume those.

    Runs after the task consumer is set up and before the event loop fetches a message.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        hooked = getattr(c.app, "_mg_emergency", None)
        if hooked is None or c.task_consumer is None:
            return
        guard, records = hooked
        status = guard.refresh()
        queues = [QueueSpec.from_celery(q.as_dict(recurse=True)) for q in c.task_consumer.queues]
        emergency = emergency_pause_in_effect(status)
        if not emergency:
            paused = paused_queue_names(status.paused_queues, str(c.hostname), guard.now())
            queues = [q for q in queues if q.name in paused]
            if not queues:
                return
        else:
            try:
                records.set_cancelled(c.hostname, queues)
            except StoreUnavailable as exc:
                logger.warning(
                    "cannot record paused consumers: %s", exc, extra={"mg_event": "store_error"}
                )
        for queue in queues:
            c.cancel_task_queue(queue.name)
        c._mg_paused_at_start = (queues, emergency)
        logger.warning(
            "started %s: not consuming %s",
            "during an emergency" if emergency else "while queues are paused",
            ", ".join(q.name for q in queues) or "anything",
            extra={"mg_event": "consumers_cancelled", "mg_worker": c.hostname},
        )
