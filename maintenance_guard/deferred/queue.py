"""`DeferredQueue`: work parked in Redis during maintenance, replayed after it.

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
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from redis.exceptions import RedisError

from ..errors import InvalidInput
from ..records import RedisRecords
from ..store import StateStore, dump_json
from .entry import DeferredEntry

logger = logging.getLogger("maintenance_guard")

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

    @property
    def check_keys(self) -> tuple[str, str]:
        """The keys `check` reads, for a watcher poll to read instead (`check_from`)."""
        return (self.order_key, self.marker_key)

    def check_from(self, values: Sequence[str | None]) -> QueueCheck:
        """The `check` result from the values a poll read at `check_keys`."""
        pending, marker = (list(values) + [None, None])[:2]
        self.last_marker = marker
        return QueueCheck(int(pending or 0), marker)

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
