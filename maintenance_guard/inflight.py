"""The in-flight job registry: which guarded jobs run now, with heartbeats, and drain.

Schema (shared with `RedisStore.count_inflight`): a ZSET ``inflight`` (member = task id,
score = heartbeat deadline, epoch seconds) and a hash ``inflight:jobs`` (task id -> JSON
details). A job whose worker dies stops being refreshed and drops out once its deadline
passes. Starting and finishing a job cost one pipelined round trip each. No Celery import.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, cast

from .errors import InvalidInput, StoreUnavailable
from .store import RedisStore, StateStore

if TYPE_CHECKING:
    from .guard import MaintenanceGuard

logger = logging.getLogger("maintenance_guard")


@dataclass(frozen=True)
class InflightJob:
    """One running job."""

    id: str
    name: str
    operation: str | None
    worker: str
    pid: int
    started_at: float
    deadline: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


class InflightRegistry:
    """Reads and writes the registry of one key prefix. Raises `StoreUnavailable`."""

    def __init__(self, store: StateStore, heartbeat_timeout: float = 30.0) -> None:
        if not isinstance(store, RedisStore):
            raise InvalidInput("the in-flight registry needs the Redis state store")
        self.store = store
        self.redis = store.redis
        self.zset_key = store.inflight_key
        self.jobs_key = store.key("inflight:jobs")
        self.workers_key = store.key("workers")
        self.heartbeat_timeout = heartbeat_timeout

    def start(self, job: InflightJob, now: float | None = None) -> None:
        """Record ``job`` as running (one pipelined round trip)."""
        now = time.time() if now is None else now
        details = json.dumps({k: v for k, v in asdict(job).items() if k != "deadline"})
        with self.store._errors("record an in-flight job"):
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(self.zset_key, {job.id: now + self.heartbeat_timeout})
            pipe.hset(self.jobs_key, job.id, details)
            pipe.execute()

    def finish(self, job_ids: Iterable[str]) -> None:
        """Forget finished jobs (one pipelined round trip)."""
        ids = list(job_ids)
        if not ids:
            return
        with self.store._errors("forget an in-flight job"):
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrem(self.zset_key, *ids)
            pipe.hdel(self.jobs_key, *ids)
            pipe.execute()

    def heartbeat(self, job_ids: Iterable[str], now: float | None = None) -> None:
        """Push the deadlines of ``job_ids`` forward; jobs already gone stay gone (XX)."""
        ids = list(job_ids)
        if not ids:
            return
        now = time.time() if now is None else now
        deadline = now + self.heartbeat_timeout
        with self.store._errors("refresh in-flight heartbeats"):
            self.redis.zadd(self.zset_key, dict.fromkeys(ids, deadline), xx=True)

    def jobs(self, now: float | None = None) -> list[InflightJob]:
        """Live jobs, oldest first; records whose deadline passed are purged."""
        now = time.time() if now is None else now
        with self.store._errors("list in-flight jobs"):
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrangebyscore(self.zset_key, now, "+inf", withscores=True)
            pipe.zrangebyscore(self.zset_key, "-inf", f"({now}")
            pipe.hgetall(self.jobs_key)
            live, expired, details = pipe.execute()
            details = cast(dict[str, str], details)
            stale = set(cast(list[str], expired)) | (set(details) - {member for member, _ in live})
            if stale:
                # Expired, or a details row whose ZSET member is gone (dead worker).
                pipe = self.redis.pipeline(transaction=False)
                pipe.zremrangebyscore(self.zset_key, "-inf", f"({now}")
                pipe.hdel(self.jobs_key, *stale)
                pipe.execute()
        out: list[InflightJob] = []
        for member, score in live:
            raw = details.get(member)
            data: dict[str, Any] = json.loads(raw) if raw else {"id": member}
            out.append(
                InflightJob(
                    id=member,
                    name=str(data.get("name", "?")),
                    operation=data.get("operation"),
                    worker=str(data.get("worker", "?")),
                    pid=int(data.get("pid") or 0),
                    started_at=float(data.get("started_at") or 0),
                    deadline=float(score),
                )
            )
        out.sort(key=lambda j: j.started_at)
        return out

    def clear_worker(self, hostname: str) -> list[str]:
        """Remove every record of worker ``hostname`` (a restarted worker's stale jobs)."""
        with self.store._errors("read in-flight jobs"):
            details = cast(dict[str, str], self.redis.hgetall(self.jobs_key))
        ids = [
            job_id for job_id, raw in details.items() if json.loads(raw).get("worker") == hostname
        ]
        self.finish(ids)
        return ids

    def register_worker(self, hostname: str, info: dict[str, Any]) -> None:
        """Note a running worker."""
        with self.store._errors("register a worker"):
            self.redis.hset(self.workers_key, hostname, json.dumps(info))

    def unregister_worker(self, hostname: str) -> None:
        """Forget a worker that shut down."""
        with self.store._errors("unregister a worker"):
            self.redis.hdel(self.workers_key, hostname)

    def workers(self) -> dict[str, dict[str, Any]]:
        """Registered workers: hostname -> info."""
        with self.store._errors("list workers"):
            raw = cast(dict[str, str], self.redis.hgetall(self.workers_key))
        return {k: json.loads(v) for k, v in raw.items()}


class Heartbeat:
    """Per-process set of running job ids, refreshed by a daemon thread.

    Thread-safe; fork-aware (a child process starts its own thread on first use).
    """

    def __init__(self, registry: InflightRegistry, interval: float) -> None:
        self.registry = registry
        self.interval = interval
        self._lock = threading.Lock()
        self._ids: set[str] = set()
        self._pid = 0
        self._stop = threading.Event()

    def add(self, job_id: str) -> None:
        """Track ``job_id`` in this process."""
        with self._lock:
            self._ids.add(job_id)
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._ids = {job_id}
                self._stop = threading.Event()
                threading.Thread(
                    target=self._run, name="maintenance-guard-heartbeat", daemon=True
                ).start()

    def discard(self, job_id: str) -> None:
        """Stop tracking ``job_id``."""
        with self._lock:
            self._ids.discard(job_id)

    def stop(self) -> None:
        """Stop the thread of this process."""
        self._stop.set()

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(self.interval):
            with self._lock:
                ids = list(self._ids)
            try:
                self.registry.heartbeat(ids)
            except StoreUnavailable as exc:
                logger.warning(
                    "cannot refresh in-flight heartbeats: %s",
                    exc,
                    extra={"mg_event": "heartbeat_failed", "mg_jobs": len(ids)},
                )


@dataclass
class DrainResult:
    """The outcome of `drain`: ``drained`` is False on timeout, with what still runs."""

    drained: bool
    elapsed: float
    remaining: list[InflightJob] = field(default_factory=list)


DrainProgress = Callable[[list[InflightJob], float], None]


def drain(
    guard: MaintenanceGuard,
    timeout: float,
    operations: Iterable[str] | None = None,
    *,
    poll_interval: float = 0.25,
    progress: DrainProgress | None = None,
) -> DrainResult:
    """Wait until no tracked job (of ``operations``, if given) is in flight.

    Blocks up to ``timeout`` seconds; ``progress(jobs, elapsed)`` is called after each
    poll. Raises `InvalidInput` for a bad timeout or an unknown operation, and
    `StoreUnavailable` if Redis cannot be read.
    """
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 <= timeout <= 86_400
    ):
        raise InvalidInput("timeout must be a number of seconds between 0 and 86400")
    wanted: frozenset[str] | None = None
    if operations is not None:
        if isinstance(operations, str):
            raise InvalidInput("operations must be a list of operation names")
        wanted = frozenset(guard.catalog.require(op) for op in operations)
    registry = InflightRegistry(guard.store, guard.settings.heartbeat_timeout)
    started = time.monotonic()
    while True:
        jobs = registry.jobs()
        if wanted is not None:
            jobs = [j for j in jobs if j.operation in wanted]
        elapsed = time.monotonic() - started
        if progress is not None:
            progress(jobs, elapsed)
        if not jobs or elapsed >= timeout:
            from .metrics import observe_drain  # imported here: prometheus only when draining

            observe_drain(elapsed)
            return DrainResult(not jobs, elapsed, jobs)
        time.sleep(min(poll_interval, max(0.0, timeout - elapsed)) or poll_interval)
