"""The in-flight job registry: which guarded jobs run now, with heartbeats, and drain.

Schema (shared with `RedisStore.count_inflight`): a ZSET ``inflight`` (member = task id,
score = heartbeat deadline, epoch seconds) and a hash ``inflight:jobs`` (task id -> JSON
details). A job whose worker dies stops being refreshed and drops out once its deadline
passes (kept a day in ``inflight:lost``, so `drain` can say so). Workers write their
records from a background thread (`tracking.InflightTracker`), never on the task's own
path.
No Celery import.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, cast

from .records import RedisRecords
from .store import INFLIGHT, StateStore


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


class InflightRegistry(RedisRecords):
    """Reads and writes the registry of one key prefix. Raises `StoreUnavailable`.

    ``now`` is the clock deadlines are written and read with (the guard's, corrected to
    Redis' clock), so processes whose clocks disagree agree on which job is alive.
    """

    what = "in-flight records"

    def __init__(
        self,
        store: StateStore,
        heartbeat_timeout: float = 30.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(store)
        self.zset_key = self.key(INFLIGHT)
        self.jobs_key = self.key(f"{INFLIGHT}:jobs")
        self.lost_key = self.key(f"{INFLIGHT}:lost")
        self.workers_key = self.key("workers")
        self.heartbeat_timeout = heartbeat_timeout
        self.now = now

    def start(self, job: InflightJob, now: float | None = None) -> None:
        """Record ``job`` as running (one pipelined round trip)."""
        self.write([job], [], [], now)

    def finish(self, job_ids: Iterable[str]) -> None:
        """Forget finished jobs (one pipelined round trip)."""
        self.write([], list(job_ids), [])

    def heartbeat(self, job_ids: Iterable[str], now: float | None = None) -> None:
        """Push the deadlines of ``job_ids`` forward; jobs already gone stay gone (XX)."""
        self.write([], [], list(job_ids), now)

    def write(
        self,
        started: Iterable[InflightJob],
        finished: Iterable[str],
        alive: Iterable[str],
        now: float | None = None,
    ) -> None:
        """Record started jobs, forget finished ones and push the deadlines of ``alive``
        ones forward (XX: a job already gone stays gone), in one pipelined round trip."""
        started, finished, alive = list(started), list(finished), list(alive)
        if not (started or finished or alive):
            return
        deadline = (self.now() if now is None else now) + self.heartbeat_timeout
        with self.errors("record in-flight jobs"):
            pipe = self.redis.pipeline(transaction=False)
            if started:
                pipe.zadd(self.zset_key, {job.id: deadline for job in started})
                pipe.hset(
                    self.jobs_key, mapping={job.id: json.dumps(_details(job)) for job in started}
                )
            if finished:
                pipe.zrem(self.zset_key, *finished)
                pipe.hdel(self.jobs_key, *finished)
            if alive:
                pipe.zadd(self.zset_key, dict.fromkeys(alive, deadline), xx=True)
            pipe.execute()

    def lose(self, jobs: Iterable[InflightJob], now: float | None = None) -> None:
        """Record ``jobs`` as lost now (their process died under them, as the process that
        ran it saw) and forget their in-flight records. A job's recorded details are kept
        when it has a record; ``jobs`` give them when it has none (it died before its
        start was written)."""
        jobs = list(jobs)
        if not jobs:
            return
        now = self.now() if now is None else now
        ids = [job.id for job in jobs]
        with self.errors("record lost jobs"):
            recorded = cast(list[str | None], self.redis.hmget(self.jobs_key, ids))
            pipe = self.redis.pipeline(transaction=False)
            for job, raw in zip(jobs, recorded, strict=True):
                if raw:
                    value = _lost(json.loads(raw), now)
                    pipe.hset(self.lost_key, job.id, value)
                else:
                    # No record: it was never written, or an earlier call that timed out
                    # moved it here already (its details are better than ``job``'s).
                    value = _lost(_details(job), now)
                    pipe.hsetnx(self.lost_key, job.id, value)
            pipe.zrem(self.zset_key, *ids)
            pipe.hdel(self.jobs_key, *ids)
            pipe.execute()

    def jobs(self, now: float | None = None) -> list[InflightJob]:
        """Live jobs, oldest first. Records whose deadline passed (their worker died) are
        purged and kept a day under "lost" (see `lost`)."""
        now = self.now() if now is None else now
        with self.errors("list in-flight jobs"):
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrangebyscore(self.zset_key, now, "+inf", withscores=True)
            pipe.zrangebyscore(self.zset_key, "-inf", f"({now}")
            pipe.hgetall(self.jobs_key)
            live, expired, details = pipe.execute()
            details = cast(dict[str, str], details)
            live_ids = {member for member, _ in live}
            stale = set(cast(list[str], expired)) | (set(details) - live_ids)
            if stale:
                # Expired, or a details row whose ZSET member is gone (dead worker).
                lost = {
                    job_id: _lost(json.loads(details[job_id]), now)
                    for job_id in stale & set(cast(list[str], expired))
                    if job_id in details
                }
                pipe = self.redis.pipeline(transaction=False)
                pipe.zremrangebyscore(self.zset_key, "-inf", f"({now}")
                pipe.hdel(self.jobs_key, *stale)
                if lost:
                    pipe.hset(self.lost_key, mapping=cast(dict[str | bytes, str], lost))
                pipe.execute()
        out = [_job(member, details.get(member), float(score)) for member, score in live]
        out.sort(key=lambda j: j.started_at)
        return out

    def snapshot(self, now: float) -> tuple[list[tuple[str, float]], dict[str, str]]:
        """Live (id, deadline) pairs and every job's raw details; read only."""
        with self.errors("read in-flight jobs"):
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrangebyscore(self.zset_key, now, "+inf", withscores=True)
            pipe.hgetall(self.jobs_key)
            live, details = pipe.execute()
        return cast(list[tuple[str, float]], live), cast(dict[str, str], details)

    def count_by_operation(self) -> dict[str, int]:
        """Live jobs per operation (``-`` when unclassified); read only."""
        with self.errors("count in-flight jobs"):
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrangebyscore(self.zset_key, self.now(), "+inf")
            pipe.hgetall(self.jobs_key)
            live, details = pipe.execute()
        counts: dict[str, int] = {}
        for job_id in cast(list[str], live):
            try:
                operation = str(json.loads(details.get(job_id) or "{}").get("operation") or "-")
            except (ValueError, AttributeError):
                operation = "-"
            counts[operation] = counts.get(operation, 0) + 1
        return counts

    def lost(self, since: float = 0.0) -> list[InflightJob]:
        """Jobs whose heartbeat stopped (their worker died) since ``since``, oldest first;
        records older than a day are forgotten here."""
        with self.errors("list lost in-flight jobs"):
            raw = cast(dict[str, str], self.redis.hgetall(self.lost_key))
        out: list[InflightJob] = []
        old: list[str] = []
        now = self.now()
        for job_id, value in raw.items():
            lost_at = float(json.loads(value).get("lost_at") or 0)
            if lost_at < now - 86_400:
                old.append(job_id)
            elif lost_at >= since:
                out.append(_job(job_id, value, lost_at))
        if old:
            with self.errors("forget lost in-flight jobs"):
                self.redis.hdel(self.lost_key, *old)
        return sorted(out, key=lambda j: j.started_at)

    def clear_worker(self, hostname: str) -> list[str]:
        """Remove every record of worker ``hostname`` (a restarted worker's stale jobs)."""
        with self.errors("read in-flight jobs"):
            details = cast(dict[str, str], self.redis.hgetall(self.jobs_key))
        ids = [
            job_id for job_id, raw in details.items() if json.loads(raw).get("worker") == hostname
        ]
        self.finish(ids)
        return ids

    def register_worker(self, hostname: str, info: dict[str, Any]) -> None:
        """Note a running worker."""
        with self.errors("register a worker"):
            self.redis.hset(self.workers_key, hostname, json.dumps(info))

    def update_worker(self, hostname: str, **fields: Any) -> None:
        """Change fields of a registered worker's info (only that worker writes it); a
        no-op for a worker not registered."""
        with self.errors("update a worker"):
            raw = cast("str | None", self.redis.hget(self.workers_key, hostname))
            if raw is None:
                return
            self.redis.hset(self.workers_key, hostname, json.dumps({**json.loads(raw), **fields}))

    def unregister_worker(self, hostname: str) -> None:
        """Forget a worker that shut down."""
        with self.errors("unregister a worker"):
            self.redis.hdel(self.workers_key, hostname)

    def workers(self) -> dict[str, dict[str, Any]]:
        """Registered workers: hostname -> info."""
        with self.errors("list workers"):
            raw = cast(dict[str, str], self.redis.hgetall(self.workers_key))
        return {k: json.loads(v) for k, v in raw.items()}


def _details(job: InflightJob) -> dict[str, Any]:
    return {k: v for k, v in asdict(job).items() if k != "deadline"}


def _lost(details: dict[str, Any], now: float) -> str:
    """A ``lost`` hash value: the job's details and when it was found lost."""
    return json.dumps({**details, "lost_at": now})


def _job(job_id: str, raw: str | None, deadline: float) -> InflightJob:
    data: dict[str, Any] = json.loads(raw) if raw else {"id": job_id}
    return InflightJob(
        id=job_id,
        name=str(data.get("name", "?")),
        operation=data.get("operation"),
        worker=str(data.get("worker", "?")),
        pid=int(data.get("pid") or 0),
        started_at=float(data.get("started_at") or 0),
        deadline=deadline,
    )
