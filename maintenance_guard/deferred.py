"""Deferred submissions: work parked in Redis during maintenance and replayed after it.

Each broker has its own queue (``deferred:<app>:*``; ``app`` is a short hash of the
broker address), so parked work is replayed only by a process publishing to the broker it
came from. An entry is keyed by its task id, chosen by the caller: parking the same id
twice stores it once, so a caller whose park timed out (the write may still land) can
park again safely. Replay holds a short lock (entries go out in order) and claims each
entry with one Lua call that moves it to "replaying" under the replayer's token; a claim
retried after a timeout returns the same entry, and a confirmed entry is remembered as
sent for a day, so a late duplicate is not parked again. No Celery import here: the
adapter passes a ``send`` callable.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from redis.exceptions import RedisError

from .errors import InvalidInput, StoreUnavailable
from .records import RedisRecords
from .store import StateStore, dump_json

logger = logging.getLogger("maintenance_guard")

DEFER_POLICIES = ("refuse", "defer")
LOCK_TTL_MS = 10_000
SENT_RETENTION = 86_400.0  # seconds a replayed id is remembered (a later park is a duplicate)

# KEYS: order list, entries hash, replaying hash, owners hash, sent zset, queues hash,
# marker. ARGV: id, raw entry, queue name, a new marker.
# The queue's marker when parked now, 0 when already parked, replaying or sent.
_PARK_LUA = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1
   or redis.call('ZSCORE', KEYS[5], ARGV[1]) then
  return 0
end
redis.call('HSETNX', KEYS[6], ARGV[3], '{}')
redis.call('SETNX', KEYS[7], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[1], ARGV[1])
return redis.call('GET', KEYS[7])
"""

# KEYS: order list, entries hash, replaying hash, owners hash, lock.
# ARGV: token, lock ttl (ms). Returns the claimed raw entry, or false when none is left.
# An entry this token claimed before (a claim whose answer was lost) is returned again.
_CLAIM_LUA = """
if redis.call('GET', KEYS[5]) ~= ARGV[1] then return false end
redis.call('PEXPIRE', KEYS[5], ARGV[2])
local owners = redis.call('HGETALL', KEYS[4])
for i = 1, #owners, 2 do
  if owners[i + 1] == ARGV[1] then return redis.call('HGET', KEYS[3], owners[i]) end
end
while true do
  local id = redis.call('LPOP', KEYS[1])
  if not id then return false end
  local raw = redis.call('HGET', KEYS[2], id)
  if raw then
    redis.call('HDEL', KEYS[2], id)
    redis.call('HSET', KEYS[3], id, raw)
    redis.call('HSET', KEYS[4], id, ARGV[1])
    return raw
  end
end
"""

# KEYS: replaying hash, owners hash, sent zset. ARGV: id, now, forget before. Idempotent.
_CONFIRM_LUA = """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
return 1
"""

# KEYS: order list, entries hash, replaying hash, owners hash. ARGV: id.
# Put a claimed entry back at the head of the queue.
_UNCLAIM_LUA = """
local raw = redis.call('HGET', KEYS[3], ARGV[1])
if not raw then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], raw)
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
"""

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def check_policy(value: object) -> str:
    """Validate an ``on_maintenance`` value (``"refuse"`` or ``"defer"``)."""
    if value not in DEFER_POLICIES:
        raise InvalidInput(
            f"on_maintenance must be one of {', '.join(DEFER_POLICIES)}, not {value!r}"
        )
    return str(value)


@dataclass(frozen=True)
class DeferredEntry:
    """One parked submission.

    ``kind`` is ``"call"`` (a refused `send_task` call: name, args, kwargs, options) or
    ``"message"`` (a broker message the worker did not run: raw body and headers).
    """

    id: str
    kind: str
    task: str
    operation: str | None
    source: str
    deferred_at: float
    reason: str = ""
    payload: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps(
            {
                "id": self.id,
                "kind": self.kind,
                "task": self.task,
                "operation": self.operation,
                "source": self.source,
                "deferred_at": self.deferred_at,
                "reason": self.reason,
                "payload": self.payload,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str) -> DeferredEntry:
        """Decode the stored form."""
        data = json.loads(raw)
        return cls(
            id=str(data["id"]),
            kind=str(data["kind"]),
            task=str(data["task"]),
            operation=data.get("operation"),
            source=str(data.get("source", "")),
            deferred_at=float(data.get("deferred_at") or 0),
            reason=str(data.get("reason", "")),
            payload=dict(data.get("payload") or {}),
        )

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description without the payload."""
        return {
            "id": self.id,
            "kind": self.kind,
            "task": self.task,
            "operation": self.operation,
            "source": self.source,
            "deferred_at": self.deferred_at,
            "reason": self.reason,
        }


@dataclass
class ReplayReport:
    """What one replay pass did."""

    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped_locked: bool = False


@dataclass(frozen=True)
class QueueCheck:
    """One look at a queue: how many entries wait, and the marker that a store which
    restarted empty no longer has."""

    pending: int
    marker: str | None


class DeferredQueue(RedisRecords):
    """The parked submissions of one broker (``app``) under one key prefix.

    Without ``app`` it is a read-only view over every broker's queue (for listing).
    Raises `StoreUnavailable` on Redis errors.
    """

    what = "deferred submissions"

    def __init__(self, store: StateStore, app: str | None = None) -> None:
        super().__init__(store)
        self.app = app
        self.apps_key = self.key("deferred:apps")
        base = f"deferred:{app}" if app else "deferred:-"
        self.order_key = self.key(f"{base}:order")
        self.entries_key = self.key(f"{base}:entries")
        self.replaying_key = self.key(f"{base}:replaying")
        self.owners_key = self.key(f"{base}:owners")
        self.sent_key = self.key(f"{base}:sent")
        self.lock_key = self.key(f"{base}:lock")
        self.marker_key = self.key(f"{base}:marker")
        # The marker the last `park` or `check` saw (a store that lost the queue has
        # another one, or none).
        self.last_marker: str | None = None
        self._park = self.redis.register_script(_PARK_LUA)
        self._claim = self.redis.register_script(_CLAIM_LUA)
        self._confirm = self.redis.register_script(_CONFIRM_LUA)
        self._unclaim = self.redis.register_script(_UNCLAIM_LUA)
        self._release = self.redis.register_script(_RELEASE_LUA)

    # ------------------------------------------------------------------ one broker

    def register(self, info: Mapping[str, object]) -> dict[str, dict[str, Any]]:
        """Note this broker's queue (``info``: broker, main, host, pid) and return the
        other brokers' notes under the same prefix."""
        self._need_app()
        with self.errors("register a deferred queue"):
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(self.apps_key, cast(str, self.app), dump_json(dict(info)))
            pipe.hgetall(self.apps_key)
            _, raw = pipe.execute()
        return {k: json.loads(v) for k, v in cast(dict[str, str], raw).items() if k != self.app}

    def park(self, entry: DeferredEntry) -> bool:
        """Append ``entry`` unless its id is already parked, being replayed, or was
        replayed in the last day. True if this call parked it. Safe to repeat."""
        self._need_app()
        with self.errors("park a deferred submission"):
            parked = self._park(
                keys=[*self._keys(), self.apps_key, self.marker_key],
                args=[entry.id, entry.to_json(), self.app, uuid.uuid4().hex[:12]],
            )
        if isinstance(parked, str):
            self.last_marker = parked
            return True
        return False

    def state_of(self, entry_id: str) -> str | None:
        """``"parked"``, ``"replaying"``, ``"sent"`` or None (unknown id)."""
        with self.errors("look up a deferred submission"):
            pipe = self.redis.pipeline(transaction=False)
            pipe.hexists(self.entries_key, entry_id)
            pipe.hexists(self.replaying_key, entry_id)
            pipe.zscore(self.sent_key, entry_id)
            parked, replaying, sent = pipe.execute()
        if parked:
            return "parked"
        if replaying:
            return "replaying"
        return "sent" if sent is not None else None

    def check(self) -> QueueCheck:
        """How many entries wait, and the queue's marker (set by the first park; a store
        that restarted empty has none, or a new one)."""
        self._need_app()
        with self.errors("check deferred submissions"):
            pipe = self.redis.pipeline(transaction=False)
            pipe.llen(self.order_key)
            pipe.get(self.marker_key)
            pending, marker = pipe.execute()
        self.last_marker = cast("str | None", marker)
        return QueueCheck(int(pending), self.last_marker)

    def replay(
        self,
        send: Callable[[DeferredEntry], None],
        *,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> ReplayReport:
        """Send every parked entry through ``send``, in order, each exactly once.

        Only one process replays a queue at a time (others return with
        ``skipped_locked``). ``keep_going`` is asked before each entry (stop when
        maintenance starts again). An entry whose ``send`` raises goes back to the head
        and the pass stops.
        """
        self._need_app()
        report = ReplayReport()
        with self._lock() as token:
            if token is None:
                report.skipped_locked = True
                return report
            while keep_going():
                with self.errors("claim a deferred submission"):
                    raw = self._claim(
                        keys=[*self._keys()[:4], self.lock_key], args=[token, LOCK_TTL_MS]
                    )
                if raw is None:
                    break
                entry = DeferredEntry.from_json(cast(str, raw))
                try:
                    send(entry)
                except Exception as exc:  # the broker failed: keep the entry for later
                    report.failed.append(entry.id)
                    logger.warning(
                        "replay of deferred %s failed; kept for later: %s",
                        entry.task,
                        exc,
                        extra={"mg_event": "replay_failed", "mg_task_id": entry.id},
                    )
                    with self.errors("return a deferred submission"):
                        self._unclaim(keys=self._keys()[:4], args=[entry.id])
                    break
                now = time.time()
                with self.errors("confirm a replayed submission"):
                    self._confirm(
                        keys=[self.replaying_key, self.owners_key, self.sent_key],
                        args=[entry.id, repr(now), repr(now - SENT_RETENTION)],
                    )
                report.sent.append(entry.id)
                logger.info(
                    "replayed deferred %s[%s]",
                    entry.task,
                    entry.id,
                    extra={"mg_event": "replayed", "mg_task": entry.task, "mg_task_id": entry.id},
                )
        return report

    def claim_loss_report(self, marker: str | None) -> bool:
        """True for the first caller reporting that the queue with ``marker`` was lost
        (so the loss is audited once, whoever notices it)."""
        self._need_app()
        with self.errors("claim the deferred-loss report"):
            claim = self.key(f"deferred:{self.app}:lost:{marker}")
            return bool(self.redis.set(claim, "1", nx=True, ex=86_400))

    def lock_ttl(self) -> float:
        """Seconds until the replay lock expires (0 when nobody holds it)."""
        with self.errors("read the replay lock"):
            ms = int(self.redis.pttl(self.lock_key))
        return max(0.0, ms / 1000)

    def requeue_stuck(self) -> list[str] | None:
        """Put entries left "replaying" by a replayer that died back at the head, in order.

        An operator's decision: such an entry may have reached the broker just before its
        replayer died, so requeueing it may run it twice. Returns the ids, or None when
        a replay is running right now (for the all-brokers view: in some broker's queue).
        """
        if not self.app:
            moved: list[str] = []
            for queue in self._queues():
                ids = queue.requeue_stuck()
                if ids is None:
                    return None
                moved += ids
            return moved
        with self._lock() as token:
            if token is None:
                return None
            stuck = self.replaying()
            for entry in reversed(stuck):
                with self.errors("requeue a stuck submission"):
                    self._unclaim(keys=self._keys()[:4], args=[entry.id])
        for entry in stuck:
            logger.warning(
                "requeued deferred %s[%s] left replaying by a dead replayer",
                entry.task,
                entry.id,
                extra={"mg_event": "deferred_requeued", "mg_task_id": entry.id},
            )
        return [e.id for e in stuck]

    # ------------------------------------------------------------------ listing

    def apps(self) -> list[str]:
        """The brokers with a queue under this prefix (this one only, for a broker view)."""
        if self.app:
            return [self.app]
        with self.errors("list deferred queues"):
            return sorted(cast(list[str], self.redis.hkeys(self.apps_key)))

    def entries(self) -> list[DeferredEntry]:
        """Parked entries, oldest first per broker (entries being replayed right now are
        not listed)."""
        out: list[DeferredEntry] = []
        for queue in self._queues():
            with queue.errors("list deferred submissions"):
                ids = cast(list[str], queue.redis.lrange(queue.order_key, 0, -1))
                raw = (
                    cast(list[str | None], queue.redis.hmget(queue.entries_key, ids)) if ids else []
                )
            out += [DeferredEntry.from_json(r) for r in raw if r is not None]
        return out

    def replaying(self) -> list[DeferredEntry]:
        """Entries claimed by a replayer and not yet confirmed sent."""
        out: list[DeferredEntry] = []
        for queue in self._queues():
            with queue.errors("list replaying submissions"):
                raw = cast(dict[str, str], queue.redis.hgetall(queue.replaying_key))
            out += [DeferredEntry.from_json(r) for r in raw.values()]
        return sorted(out, key=lambda e: e.deferred_at)

    def __len__(self) -> int:
        total = 0
        for queue in self._queues():
            with queue.errors("count deferred submissions"):
                total += int(queue.redis.llen(queue.order_key))
        return total

    # ------------------------------------------------------------------ internals

    def _queues(self) -> Iterator[DeferredQueue]:
        if self.app:
            yield self
            return
        for app in self.apps():
            yield DeferredQueue(self.store, app)

    def _keys(self) -> list[str]:
        return [
            self.order_key,
            self.entries_key,
            self.replaying_key,
            self.owners_key,
            self.sent_key,
        ]

    def _need_app(self) -> None:
        if not self.app:
            raise InvalidInput("this deferred-queue view spans every broker; name one (app=...)")

    @contextmanager
    def _lock(self) -> Iterator[str | None]:
        token = f"{os.getpid()}-{uuid.uuid4().hex}"
        with self.errors("take the replay lock"):
            got = self.redis.set(self.lock_key, token, nx=True, px=LOCK_TTL_MS)
        if not got:
            yield None
            return
        try:
            yield token
        finally:
            try:
                self._release(keys=[self.lock_key], args=[token])
            except RedisError:
                pass  # the lock expires by itself


class Replayer:
    """Replays one queue from a background thread whenever asked, until it is empty.

    A pass that fails (the broker is down) is retried with backoff, in order; a pass that
    finds the lock taken (another process replays, or a dead one's lock has not expired)
    is retried once the lock expires. Thread-safe; fork-aware (a child starts its own
    thread on first use).
    """

    def __init__(
        self,
        queue: DeferredQueue,
        send: Callable[[DeferredEntry], None],
        maintenance_off: Callable[[], bool],
        *,
        first_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.queue = queue
        self.send = send
        self.maintenance_off = maintenance_off
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self._wake = threading.Event()
        self._pid = 0
        self._lock = threading.Lock()
        self.passes = 0

    def request(self) -> None:
        """Replay soon (from the background thread); returns at once."""
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._wake = threading.Event()
                threading.Thread(
                    target=self._run, name="maintenance-guard-replayer", daemon=True
                ).start()
            self._wake.set()

    def _run(self) -> None:
        wake = self._wake
        backoff = self.first_backoff
        while True:
            wake.wait()
            wake.clear()
            while True:
                outcome = self._one_pass()
                if outcome == "done":
                    backoff = self.first_backoff
                    break
                if outcome == "failed":
                    delay, backoff = backoff, min(self.max_backoff, backoff * 2)
                elif outcome == "locked":
                    delay = self._lock_ttl() + 0.2
                else:  # "more": entries were parked while this pass ran
                    delay = 0.05
                if wake.wait(delay):
                    wake.clear()

    def _one_pass(self) -> str:
        """Replay once: ``done``, ``failed`` (retry with backoff), ``locked`` (retry when
        the lock expires) or ``more`` (retry at once)."""
        try:
            if not self.maintenance_off():
                return "done"
            report = self.queue.replay(self.send, keep_going=self.maintenance_off)
            self.passes += 1
            if report.failed:
                return "failed"
            if report.skipped_locked:
                return "locked"
            if self.maintenance_off() and self.queue.check().pending:
                return "more"
            return "done"
        except StoreUnavailable as exc:
            logger.warning(
                "cannot replay deferred submissions: %s", exc, extra={"mg_event": "replay_failed"}
            )
            return "failed"
        except Exception:
            logger.exception("replaying deferred submissions failed")
            return "failed"

    def _lock_ttl(self) -> float:
        try:
            return self.queue.lock_ttl()
        except StoreUnavailable:
            return self.first_backoff


def new_entry(
    *,
    entry_id: str,
    kind: str,
    task: str,
    operation: str | None,
    source: str,
    reason: str,
    payload: Mapping[str, Any],
) -> DeferredEntry:
    """A `DeferredEntry` stamped now."""
    return DeferredEntry(
        id=entry_id,
        kind=kind,
        task=task,
        operation=operation,
        source=source,
        deferred_at=time.time(),
        reason=reason,
        payload=dict(payload),
    )


__all__ = [
    "DEFER_POLICIES",
    "DeferredEntry",
    "DeferredQueue",
    "QueueCheck",
    "ReplayReport",
    "Replayer",
    "StoreUnavailable",
    "check_policy",
    "new_entry",
]
