"""`Notifier`: tells people what happened, off every caller's path.

The events are the audit log's (the Redis stream every change already writes), so a
switch never waits for a notification and a notification never fails a switch. Every
long-running process whose guard has targets runs a `Notifier`; exactly one of them (the
holder of a lock in Redis, refreshed while it lives) sends. Each target has its own
cursor (the last event it took) and its own thread, so a dead target delays only itself,
and each gets the events in the stream's order. A failed send is retried with backoff
(1 s, doubling, at most 30 s apart) for ``notify_retry_for`` seconds, then given up:
audit event ``notification_failed`` and a metric. The cursor moves only after an event
was sent or given up, and only while the lock is still held; a sender that dies between
the two makes the next one send that event again, with the same ``Idempotency-Key``
(at least once).

Idle, a notifier adds no round trip: the watcher's poll reads the lock's holder and the
stream's last id (`GuardState.add_poll_reader`); only the holder refreshes its lock, every
`LOCK_TTL_MS / 3`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from ..errors import StoreUnavailable
from ..metrics import note_delivery
from ..store import AuditEvent, RedisStore, event_fields, redis_errors
from ..store.redis_store import _to_event
from .targets import DeliveryFailed, Target

if TYPE_CHECKING:
    from ..state import GuardState

logger = logging.getLogger("maintenance_guard")

LOCK_TTL_MS = 30_000
MAX_BACKOFF = 30.0
BATCH = 100
# Never notified: they are about notifications (a failing target would feed itself).
NEVER_NOTIFIED = frozenset({"notification_failed"})
DEFAULT_EVENTS = frozenset(
    {
        "enabled", "mode_changed", "updated", "disabled", "auto_ended", "progress_update",
        "emergency_activated", "jobs_revoked", "jobs_killed", "emergency_completed",
        "emergency_called_off", "jobs_recovered", "state_restored", "deferred_lost",
        "drain_completed", "drain_timed_out", "window_scheduled", "window_announced",
        "window_rescheduled", "window_cancelled", "window_missed", "queues_paused",
        "queues_resumed", "pause_ended",
    }
)  # fmt: skip

# KEYS: lock, cursor. ARGV: holder, new cursor.
_ADVANCE_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""
# KEYS: lock. ARGV: holder, ttl ms. 1 if still held (and refreshed).
_REFRESH_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


def stream_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class Notifier:
    """Sends the guard's audit events to ``targets`` (see the module docstring)."""

    def __init__(
        self,
        guard: GuardState,
        targets: Sequence[Target],
        events: frozenset[str] | None = None,
        retry_for: float = 300.0,
    ) -> None:
        store = guard.store
        if not isinstance(store, RedisStore):
            raise TypeError("notifications need the Redis store")
        self.guard = guard
        self.store = store
        self.targets = list(targets)
        self.events = (events if events is not None else DEFAULT_EVENTS) - NEVER_NOTIFIED
        self.retry_for = retry_for
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lock_key = store.key("notify:lock")
        self.poll_keys = (self.lock_key, store.events_key)
        self.holder: str | None = None  # the lock's holder at the last poll
        self.last_id: str | None = None  # the stream's last id at the last poll
        self.leader = False
        self.term = 0  # bumped each time this process takes the lock: one thread per target
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self._target_wakes = {t.id: threading.Event() for t in self.targets}
        self._threads: list[threading.Thread] = []
        self._advance = store.redis.register_script(_ADVANCE_LUA)
        self._refresh = store.redis.register_script(_REFRESH_LUA)
        self._release = store.redis.register_script(_RELEASE_LUA)

    def cursor_key(self, target: Target) -> str:
        return self.store.key(f"notify:cursor:{target.id}")

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Mark where each new target starts (events from now on; a target that already
        has a cursor keeps it) and run the notifier thread."""
        try:
            with redis_errors("start notifications"):
                last = self.store.redis.xrevrange(self.store.events_key, "+", "-", count=1)
                start_at = last[0][0] if last else "0-0"
                pipe = self.store.redis.pipeline(transaction=False)
                for target in self.targets:
                    pipe.set(self.cursor_key(target), start_at, nx=True)
                pipe.execute()
        except StoreUnavailable as exc:
            self.guard.note_store_error(exc)  # a target without a cursor starts later
        self.stop_event.clear()
        thread = threading.Thread(target=self._run, name="maintenance-guard-notifier", daemon=True)
        self._threads = [thread]
        thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop sending and give the lock up (another process takes over at once)."""
        self.stop_event.set()
        self.wake.set()
        for event in self._target_wakes.values():
            event.set()
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join(timeout)
        if self.leader:
            try:
                self._release(keys=[self.lock_key], args=[self.me])
            except Exception:  # noqa: BLE001 - best effort: the lock expires anyway
                pass
            self.leader = False

    def read_poll(self, values: tuple[str | None, ...]) -> None:
        """The watcher's poll read the lock's holder and the stream's last id."""
        self.holder, self.last_id = (list(values) + [None, None])[:2]
        self.wake.set()
        for event in self._target_wakes.values():
            event.set()

    # ------------------------------------------------------------------ the leader

    def _run(self) -> None:
        refresh_every = LOCK_TTL_MS / 3000
        next_refresh = 0.0
        while not self.stop_event.is_set():
            self.wake.wait(refresh_every)
            self.wake.clear()
            if self.stop_event.is_set():
                break
            try:
                if self.leader and time.monotonic() >= next_refresh:
                    with redis_errors("refresh the notification lock"):
                        held = self._refresh(keys=[self.lock_key], args=[self.me, LOCK_TTL_MS])
                    next_refresh = time.monotonic() + refresh_every
                    if not held:
                        self._lose()
                elif not self.leader and self.holder is None:
                    with redis_errors("take the notification lock"):
                        taken = self.store.redis.set(
                            self.lock_key, self.me, nx=True, px=LOCK_TTL_MS
                        )
                    if taken:
                        self._lead()
                        next_refresh = time.monotonic() + refresh_every
            except StoreUnavailable as exc:
                self.guard.note_store_error(exc)

    def _lead(self) -> None:
        self.term += 1
        self.leader = True
        logger.info(
            "this process sends the maintenance notifications",
            extra={"mg_event": "notifier_leader"},
        )
        for target in self.targets:
            thread = threading.Thread(
                target=self._serve,
                args=(target, self.term),
                name=f"maintenance-guard-notify-{target.id}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def _lose(self) -> None:
        self.leader = False
        logger.warning(
            "lost the notification lock (this process was too slow to refresh it); "
            "another process sends from here on",
            extra={"mg_event": "notifier_lost_lock"},
        )

    def _serve(self, target: Target, term: int) -> None:
        """One target's thread: send each event after its cursor, in order (until this
        process loses the lock, even if it takes it again meanwhile: a new thread then
        serves the target)."""
        wake = self._target_wakes[target.id]
        cursor: str | None = None
        while self.leader and self.term == term and not self.stop_event.is_set():
            try:
                if cursor is None:
                    with redis_errors("read a notification cursor"):
                        cursor = cast("str | None", self.store.redis.get(self.cursor_key(target)))
                    cursor = cursor or "0-0"
                last = self.last_id
                if last is None or stream_id(last) <= stream_id(cursor):
                    wake.wait(5.0)
                    wake.clear()
                    continue
                with redis_errors("read audit events"):
                    rows = self.store.redis.xrange(
                        self.store.events_key, f"({cursor}", "+", count=BATCH
                    )
                if not rows:  # the stream was trimmed past the cursor, or raced
                    cursor = last
                    continue
                for entry_id, fields in rows:
                    event = _to_event(entry_id, fields)
                    if event.type in self.events and not self._deliver(target, event, term):
                        return  # stopped, or no longer the sender
                    with redis_errors("move a notification cursor"):
                        moved = self._advance(
                            keys=[self.lock_key, self.cursor_key(target)], args=[self.me, entry_id]
                        )
                    if not moved:
                        self._lose()
                        return
                    cursor = entry_id
            except StoreUnavailable as exc:
                self.guard.note_store_error(exc)
                self.stop_event.wait(1.0)

    def _deliver(self, target: Target, event: AuditEvent, term: int) -> bool:
        """Send ``event`` to ``target``, retrying; False if the notifier stopped or lost
        the lock meanwhile (the event is then left for the next sender)."""
        body = self.body(event)
        started = time.monotonic()
        delay = 1.0
        attempts = 0
        while True:
            attempts += 1
            try:
                target.send(event, body)
                note_delivery(target.name, "delivered")
                return True
            except DeliveryFailed as exc:
                failure = exc
            except Exception as exc:  # noqa: BLE001 - a target's bug must not stop delivery
                failure = DeliveryFailed(f"{target.name}: {exc!r}", retryable=True)
            left = self.retry_for - (time.monotonic() - started)
            if not failure.retryable or left <= 0:
                self._give_up(target, event, failure, attempts)
                return True
            note_delivery(target.name, "retried")
            logger.warning(
                "notification %s of %s failed (%s); trying again in %.0f s",
                event.id, event.type, failure, min(delay, left),
                extra={"mg_event": "notification_retry", "mg_target": target.name},
            )  # fmt: skip
            if self.stop_event.wait(min(delay, left)) or not self.leader or self.term != term:
                return False
            delay = min(delay * 2, MAX_BACKOFF)

    def _give_up(
        self, target: Target, event: AuditEvent, failure: DeliveryFailed, attempts: int
    ) -> None:
        note_delivery(target.name, "failed")
        logger.error(
            "gave up notifying %s of %s %s after %d attempt(s): %s",
            target.name, event.type, event.id, attempts, failure,
            extra={"mg_event": "notification_failed", "mg_target": target.name},
        )  # fmt: skip
        try:
            self.store.append_event(
                event_fields(
                    "notification_failed",
                    actor="maintenance-guard",
                    reason=str(failure),
                    target=target.name,
                    event_id=event.id,
                    event_type=event.type,
                    attempts=str(attempts),
                )
            )
        except StoreUnavailable as exc:
            self.guard.note_store_error(exc)

    def body(self, event: AuditEvent) -> dict[str, Any]:
        """The JSON a webhook receives: the audit event, its id as idempotency key, and
        the key prefix (which fleet sent it)."""
        return {
            **event.to_dict(),
            "idempotency_key": event.id,
            "key_prefix": self.store.prefix,
        }
