"""Emergency records in Redis: terminated jobs, paused consumers, recovery claims, report.

All keys live under the guard's key prefix (``emergency:*``), so they share its cluster
slot. Every method raises `StoreUnavailable` when Redis fails.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, cast

from ..records import RedisRecords
from ..store import StateStore

# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class QueueSpec:
    """A queue a worker consumed from, enough to `add_consumer` it back."""

    name: str
    exchange: str = ""
    exchange_type: str = "direct"
    routing_key: str = ""

    @classmethod
    def from_celery(cls, raw: Mapping[str, Any]) -> QueueSpec:
        """From one entry of ``inspect().active_queues()``."""
        exchange = raw.get("exchange") or {}
        return cls(
            name=str(raw.get("name", "")),
            exchange=str(exchange.get("name") or raw.get("name", "")),
            exchange_type=str(exchange.get("type") or "direct"),
            routing_key=str(raw.get("routing_key") or raw.get("name", "")),
        )


@dataclass(frozen=True)
class TerminatedJob:
    """One job the emergency stopped, with what `recover` needs to run it again."""

    id: str
    name: str
    operation: str | None
    args: Any
    kwargs: Any
    worker: str
    pid: int
    started_at: float | None
    terminated_at: float | None
    signal: str
    recoverable: bool
    exchange: str = ""
    routing_key: str = ""
    emergency_id: str = ""
    stopped: bool = True  # False: still running after SIGKILL (listed, not recoverable)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TerminatedJob:
        """Inverse of `to_dict`, tolerant of older records."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return {"unserializable_repr": repr(value)[:2000]}
    return value


# KEYS: report. ARGV: emergency id, report JSON. Write only over the same emergency's report.
_SAVE_REPORT_LUA = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current)['id'] ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


# KEYS: cancelled, resumed. ARGV: worker, queues (JSON list), new token. Merge by name.
_SET_CANCELLED_LUA = """
local merged, seen = {}, {}
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
  local old = cjson.decode(raw)
  for _, q in ipairs(old.queues or old) do
    if not seen[q.name] then merged[#merged + 1] = q; seen[q.name] = true end
  end
end
for _, q in ipairs(cjson.decode(ARGV[2])) do
  if not seen[q.name] then merged[#merged + 1] = q; seen[q.name] = true end
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({queues = merged, token = ARGV[3]}))
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

# KEYS: cancelled, resumed. ARGV: worker, token, resumed info. The pause record goes
# only if it is still the one resumed (a pause recorded meanwhile stays).
_MARK_RESUMED_LUA = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw and cjson.decode(raw).token == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""


def _pause(raw: str) -> tuple[list[QueueSpec], str]:
    data = json.loads(raw)
    if isinstance(data, list):  # a record written before pause records had tokens
        return [QueueSpec(**q) for q in data], ""
    queues = data.get("queues") or []
    return [QueueSpec(**q) for q in queues if isinstance(q, dict)], str(data.get("token", ""))


class EmergencyRecords(RedisRecords):
    """The emergency's Redis records under the guard's key prefix. Raises `StoreUnavailable`."""

    what = "emergency records"

    def __init__(self, store: StateStore) -> None:
        super().__init__(store)
        self.report_key = self.key("emergency:report")
        self.terminated_key = self.key("emergency:terminated")
        self.cancelled_key = self.key("emergency:cancelled")
        self.resumed_key = self.key("emergency:resumed")
        self.recovery_key = self.key("emergency:recovery")
        self.checks_key = self.key("emergency:checks")
        self.skipped_key = self.key("emergency:skipped")
        self._save = self.redis.register_script(_SAVE_REPORT_LUA)
        self._set_cancelled = self.redis.register_script(_SET_CANCELLED_LUA)
        self._mark_resumed = self.redis.register_script(_MARK_RESUMED_LUA)

    def _hash(self, key: str) -> dict[str, Any]:
        with self.errors("read emergency records"):
            raw = cast(dict[str, str], self.redis.hgetall(key))
        return {k: json.loads(v) for k, v in raw.items()}

    def start(self, report: EmergencyReport) -> None:
        """Begin a new emergency (its report). Pause records are untouched: each one is
        removed when its worker resumes, so a worker still paused keeps its record."""
        with self.errors("record the emergency"):
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(self.resumed_key, self.checks_key)
            pipe.set(self.report_key, json.dumps(report.to_dict()))
            pipe.execute()

    def save_report(self, report: EmergencyReport) -> bool:
        """Store the (possibly partial) report of the current emergency, unless a later
        emergency's report replaced it meanwhile; True if stored."""
        with self.errors("store the emergency report"):
            return bool(
                self._save(keys=[self.report_key], args=[report.id, json.dumps(report.to_dict())])
            )

    def report(self) -> dict[str, Any] | None:
        """The stored report of the last emergency, if any."""
        with self.errors("read the emergency report"):
            raw = self.redis.get(self.report_key)
        return None if raw is None else cast(dict[str, Any], json.loads(cast(str, raw)))

    def add_terminated(self, jobs: list[TerminatedJob]) -> None:
        """Record terminated jobs (idempotent per id)."""
        if not jobs:
            return
        with self.errors("record terminated jobs"):
            self.redis.hset(
                self.terminated_key, mapping={j.id: json.dumps(j.to_dict()) for j in jobs}
            )

    def terminated(self) -> list[TerminatedJob]:
        """Every recorded terminated job, oldest first."""
        jobs = [TerminatedJob.from_dict(v) for v in self._hash(self.terminated_key).values()]
        return sorted(jobs, key=lambda j: (j.terminated_at or 0, j.id))

    def terminated_ids(self) -> list[str]:
        """Ids of every recorded terminated job (workers refuse to run these)."""
        with self.errors("read terminated job ids"):
            return list(cast(list[str], self.redis.hkeys(self.terminated_key)))

    def note_skipped(self, task_id: str, worker: str) -> None:
        """A worker refused a redelivered message of a terminated job."""
        with self.errors("record a skipped redelivery"):
            self.redis.hset(
                self.skipped_key, task_id, json.dumps({"worker": worker, "at": time.time()})
            )

    def skipped(self) -> dict[str, Any]:
        """Task id -> {worker, at} for each dropped redelivery of a terminated job."""
        return self._hash(self.skipped_key)

    def set_cancelled(self, worker: str, queues: list[QueueSpec]) -> None:
        """Remember that ``worker`` stopped consuming ``queues`` (added to what it already
        stopped: a queue paused twice is resumed once, never forgotten). Atomic, so the
        emergency run and the worker itself may both record a pause at once."""
        with self.errors("record paused consumers"):
            self._set_cancelled(
                keys=[self.cancelled_key, self.resumed_key],
                args=[worker, json.dumps([asdict(q) for q in queues]), uuid.uuid4().hex[:12]],
            )

    def cancelled(self) -> dict[str, list[QueueSpec]]:
        """Worker -> the queues an emergency paused on it that it does not consume again yet."""
        return {w: queues for w, (queues, _token) in self.pauses().items()}

    def pauses(self) -> dict[str, tuple[list[QueueSpec], str]]:
        """Worker -> (paused queues, the record's token for `mark_resumed`)."""
        with self.errors("read emergency records"):
            raw = cast(dict[str, str], self.redis.hgetall(self.cancelled_key))
        return {w: _pause(v) for w, v in raw.items()}

    def pause_state(self, worker: str) -> tuple[list[QueueSpec], str]:
        """The queues an emergency paused on ``worker`` (empty when it consumes) and the
        record's token (one round trip; what a worker checks for itself)."""
        with self.errors("read emergency records"):
            raw = cast("str | None", self.redis.hget(self.cancelled_key, worker))
        return _pause(raw) if raw else ([], "")

    def mark_resumed(self, worker: str, queues: list[str], token: str) -> None:
        """``worker`` consumes ``queues`` again: its pause record (the one ``token`` names;
        a pause recorded since is kept) is removed and the resume noted."""
        info = json.dumps({"at": time.time(), "queues": queues})
        with self.errors("record resumed consumers"):
            self._mark_resumed(
                keys=[self.cancelled_key, self.resumed_key], args=[worker, token, info]
            )

    def resumed(self) -> dict[str, Any]:
        """Worker -> {at, queues} for the workers that consumed again since the last
        emergency began."""
        return self._hash(self.resumed_key)

    def claim_recovery(self, job_id: str, by: str) -> bool:
        """Atomically claim ``job_id`` for re-enqueueing; False if already claimed."""
        claim = json.dumps({"state": "claimed", "by": by, "at": time.time()})
        with self.errors("claim a job for recovery"):
            return bool(self.redis.hsetnx(self.recovery_key, job_id, claim))

    def finish_recovery(self, job_id: str, info: Mapping[str, Any]) -> None:
        """Record the outcome of a claimed recovery."""
        with self.errors("record a recovery"):
            self.redis.hset(self.recovery_key, job_id, json.dumps(dict(info)))

    def release_recovery(self, job_id: str) -> None:
        """Give a claim back (the re-enqueue failed), so a later run can retry."""
        with self.errors("release a recovery claim"):
            self.redis.hdel(self.recovery_key, job_id)

    def recovery(self) -> dict[str, Any]:
        """Job id -> recovery record."""
        return self._hash(self.recovery_key)

    def save_checks(self, checks: Mapping[str, Any]) -> None:
        """Store the deactivation checks' outcome."""
        with self.errors("store deactivation checks"):
            self.redis.set(self.checks_key, json.dumps(dict(checks)))

    def checks(self) -> dict[str, Any] | None:
        """The last deactivation checks' outcome."""
        with self.errors("read deactivation checks"):
            raw = self.redis.get(self.checks_key)
        return None if raw is None else cast(dict[str, Any], json.loads(cast(str, raw)))


# ---------------------------------------------------------------------------- report


FINISHED_PHASES = ("done", "called_off")  # a run in one of these changes nothing more


@dataclass
class EmergencyReport:
    """What an emergency did. ``phase`` is ``grace`` while it runs, ``terminating`` and
    ``killing`` during revocation, then ``done``, or ``called_off`` when maintenance was
    switched off (or to another mode) before any job was terminated."""

    id: str
    reason: str
    by: str
    activated_at: float
    grace_period: int
    kill_after: int
    phase: str = "grace"
    workers: list[str] = field(default_factory=list)
    # Workers registered under this prefix that did not answer (hung, stopped, dead or
    # on another broker): not paused, their jobs not stopped.
    unreachable: list[dict[str, Any]] = field(default_factory=list)
    consumers_cancelled: dict[str, list[str]] = field(default_factory=dict)
    running_at_start: int = 0
    finished_in_grace: list[dict[str, Any]] = field(default_factory=list)
    # Jobs a worker had reserved and held back just before they would have started
    # (parked: they run once after maintenance).
    held_back: list[dict[str, Any]] = field(default_factory=list)
    terminated: list[TerminatedJob] = field(default_factory=list)
    not_stopped: list[dict[str, Any]] = field(default_factory=list)
    sessions: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    grace_ended_at: float | None = None
    all_gone_at: float | None = None
    finished_at: float | None = None
    # Set when maintenance was switched off (or out of this emergency) before the end of
    # the grace period: {at, mode, by}; nothing was terminated.
    called_off: dict[str, Any] | None = None

    @property
    def seconds_to_gone(self) -> float | None:
        """From the end of the grace period until the last terminated job was gone."""
        if self.grace_ended_at is None or self.all_gone_at is None:
            return None
        return max(0.0, self.all_gone_at - self.grace_ended_at)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        out = asdict(self)
        out["terminated"] = [j.to_dict() for j in self.terminated]
        out["seconds_to_gone"] = self.seconds_to_gone
        return out
