"""Deferred submissions: work parked in Redis during maintenance and replayed after it.

Entries are JSON documents in one Redis list, oldest first. Replay holds a short lock (so
entries go out in order) and claims each entry with one Lua call that pops it and records
it as "replaying"; two processes that see the end of maintenance at once therefore never
send the same entry. No Celery import here: the adapter passes a `send` callable.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from redis.exceptions import RedisError

from .errors import InvalidInput, StoreUnavailable
from .store import RedisStore, StateStore

logger = logging.getLogger("maintenance_guard")

DEFER_POLICIES = ("refuse", "defer")
LOCK_TTL_MS = 30_000

# KEYS: deferred list, replaying hash, lock. ARGV: token, lock ttl (ms).
_CLAIM_LUA = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return false end
redis.call('PEXPIRE', KEYS[3], ARGV[2])
local raw = redis.call('LPOP', KEYS[1])
if not raw then return false end
local id = cjson.decode(raw)['id']
redis.call('HSET', KEYS[2], id, raw)
return raw
"""

# KEYS: deferred list, replaying hash. ARGV: entry id. Put a claimed entry back at the head.
_UNCLAIM_LUA = """
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return 0 end
redis.call('LPUSH', KEYS[1], raw)
redis.call('HDEL', KEYS[2], ARGV[1])
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


class DeferredQueue:
    """The parked submissions of one key prefix. Raises `StoreUnavailable` on Redis errors."""

    def __init__(self, store: StateStore) -> None:
        if not isinstance(store, RedisStore):
            raise InvalidInput("deferred submissions need the Redis state store")
        self.store = store
        self.redis = store.redis
        self.list_key = store.key("deferred")
        self.replaying_key = store.key("deferred:replaying")
        self.lock_key = store.key("deferred:lock")
        self._claim = self.redis.register_script(_CLAIM_LUA)
        self._unclaim = self.redis.register_script(_UNCLAIM_LUA)
        self._release = self.redis.register_script(_RELEASE_LUA)

    def park(self, entry: DeferredEntry) -> None:
        """Append ``entry`` (it will be replayed after the ones parked before it)."""
        with self._errors("park a deferred submission"):
            self.redis.rpush(self.list_key, entry.to_json())

    def entries(self) -> list[DeferredEntry]:
        """Parked entries, oldest first (entries being replayed right now are not listed)."""
        with self._errors("list deferred submissions"):
            raw = cast(list[str], self.redis.lrange(self.list_key, 0, -1))
        return [DeferredEntry.from_json(r) for r in raw]

    def replaying(self) -> list[DeferredEntry]:
        """Entries claimed by a replayer and not yet confirmed sent."""
        with self._errors("list replaying submissions"):
            raw = cast(dict[str, str], self.redis.hgetall(self.replaying_key))
        return sorted(
            (DeferredEntry.from_json(r) for r in raw.values()), key=lambda e: e.deferred_at
        )

    def __len__(self) -> int:
        with self._errors("count deferred submissions"):
            return int(self.redis.llen(self.list_key))

    def replay(
        self,
        send: Callable[[DeferredEntry], None],
        *,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> ReplayReport:
        """Send every parked entry through ``send``, in order, each exactly once.

        Only one process replays at a time (others return with ``skipped_locked``).
        ``keep_going`` is asked before each entry (stop when maintenance starts again).
        An entry whose ``send`` raises goes back to the head and the pass stops.
        """
        report = ReplayReport()
        with self._lock() as token:
            if token is None:
                report.skipped_locked = True
                return report
            while keep_going():
                with self._errors("claim a deferred submission"):
                    raw = self._claim(
                        keys=[self.list_key, self.replaying_key, self.lock_key],
                        args=[token, LOCK_TTL_MS],
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
                    with self._errors("return a deferred submission"):
                        self._unclaim(keys=[self.list_key, self.replaying_key], args=[entry.id])
                    break
                with self._errors("confirm a replayed submission"):
                    self.redis.hdel(self.replaying_key, entry.id)
                report.sent.append(entry.id)
                logger.info(
                    "replayed deferred %s[%s]",
                    entry.task,
                    entry.id,
                    extra={"mg_event": "replayed", "mg_task": entry.task, "mg_task_id": entry.id},
                )
        return report

    def requeue_stuck(self) -> list[str] | None:
        """Put entries left "replaying" by a replayer that died back at the head, in order.

        An operator's decision: such an entry may have reached the broker just before its
        replayer died, so requeueing it may run it twice. Returns the ids, or None when
        a replay is running right now (nothing changed).
        """
        with self._lock() as token:
            if token is None:
                return None
            stuck = self.replaying()
            for entry in reversed(stuck):
                with self._errors("requeue a stuck submission"):
                    self._unclaim(keys=[self.list_key, self.replaying_key], args=[entry.id])
        for entry in stuck:
            logger.warning(
                "requeued deferred %s[%s] left replaying by a dead replayer",
                entry.task,
                entry.id,
                extra={"mg_event": "deferred_requeued", "mg_task_id": entry.id},
            )
        return [e.id for e in stuck]

    @contextmanager
    def _lock(self) -> Iterator[str | None]:
        token = f"{os.getpid()}-{uuid.uuid4().hex}"
        with self._errors("take the replay lock"):
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

    def _errors(self, what: str) -> Any:
        return self.store._errors(what)


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
    "ReplayReport",
    "StoreUnavailable",
    "check_policy",
    "new_entry",
]
