"""`Installation`: what `install` connected for one Celery app, and its deferred work
(replay, the periodic sweep, the loss of a queue a store forgot).
"""

from __future__ import annotations

import base64
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from celery import Celery

from ..admin_signature import AdminSigner, LocalSigner
from ..deferred import DeferredEntry, DeferredQueue, MemoryDeferredQueue, QueueCheck, Replayer
from ..errors import StoreUnavailable
from ..guard import MaintenanceGuard
from ..inflight import InflightRegistry
from ..snapshot import Snapshot
from ..status import MaintenanceStatus
from ..store import event_fields
from ..tracking import InflightTracker, NullTracker
from .context import (
    HEADER_GUARDED,
    HEADER_PUBLISHED_AT,
    HEADER_REPLAYED,
    kombu_loads,
    replaying,
    stamp_time,
)

logger = logging.getLogger("maintenance_guard")


@dataclass
class Installation:
    """What `install` connected for one Celery app."""

    app: Celery
    guard: MaintenanceGuard
    worker_policy: str
    broker: str  # the broker's address, password masked: identifies this app's queue
    # In-flight records, parked work, admin stamps: on Redis (set by `install`), or, for
    # a guard on a MemoryStore, in this process (no in-flight records).
    registry: InflightRegistry | None = None
    deferred: DeferredQueue | MemoryDeferredQueue = field(default_factory=MemoryDeferredQueue)
    tracker: InflightTracker | NullTracker = field(default_factory=NullTracker)
    signer: AdminSigner | LocalSigner = field(default_factory=LocalSigner)
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
    listener: Callable[[Any], None] | None = None  # the guard's change listener
    closed: bool = False  # `uninstall` was called
    in_beat: bool = False  # this process runs the beat scheduler (beat_init)
    # The guard's last snapshot under which a publish needs only its stamps (publish.py).
    quiet: Snapshot | None = None

    def known_quiet(self) -> bool:
        """True if the guard's snapshot is still the one `publish_is_quiet` last found
        quiet and its watcher keeps it current: a publish needs only its stamps. One
        identity check, the fast path of every publish while maintenance is off."""
        guard = self.guard
        return guard.snapshot is self.quiet and guard.watching

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
        if self.closed:
            return
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

    def sweep_deferred(self, check: QueueCheck | None = None) -> None:
        """Periodic (watcher thread): notice parked work that waits while maintenance is
        off (a replayer died, the broker was down) and a store that lost the queue.
        ``check``: the queue as the watcher's poll read it (else read now)."""
        if os.getpid() != self.sweeper_pid or self.closed:
            return
        if check is None:
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
        return may_replay(self.guard.refresh())

    def _still_off(self) -> bool:
        return may_replay(self.guard.current())

    def _send_entry(self, entry: DeferredEntry) -> None:
        payload = entry.payload
        if entry.kind == "call":
            options = dict(kombu_loads(payload["options"]))
            args, kwargs = kombu_loads(payload["args"]), kombu_loads(payload["kwargs"])
            headers = dict(options.pop("headers", None) or {})
            headers[HEADER_REPLAYED] = "1"
            with replaying():
                self.app.send_task(
                    entry.task, args, kwargs, task_id=entry.id, headers=headers, **options
                )
            return
        body = base64.b64decode(payload["body"])
        headers = dict(payload.get("headers") or {})
        headers.update(
            {
                HEADER_PUBLISHED_AT: stamp_time(self.guard.now()),
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


def may_replay(status: MaintenanceStatus) -> bool:
    """Parked work may go out: maintenance is off and no scheduled window holds work
    deferred until after it."""
    return not status.is_active and not any(w.holds_deferred for w in status.windows)
