"""`RedisStore`: the `StateStore` on Redis.

Every change to the state is one Lua script: it checks the expected version, bumps the
version, writes the hash, appends the audit event and publishes the new version, so two
admins changing the state at once end with one consistent state and both events logged.
All keys share one hash tag (``{prefix}:...``), so they live in one cluster slot.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import redis
from redis.exceptions import RedisClusterException, RedisError

from ..errors import ChangeTooEarly, ConcurrentChange, InvalidInput, StoreUnavailable
from ..events import log_audit_event
from ..status import MaintenanceStatus
from ..tally import StoredWindow, WindowTally
from .connect import connect
from .impact_keys import queue_window_writes, read_window
from .protocol import (
    AuditEvent,
    PollResult,
    StateStamp,
    Subscription,
    dump_json,
    new_generation,
)
from .subscription import RedisSubscription

logger = logging.getLogger("maintenance_guard")

EVENTS_MAXLEN = 10_000
TEST_RECORDS_PER_ENTRY = 1000
TEST_ENTRIES_MAXLEN = 100_000  # stream entries (batches of test records)
INFLIGHT = "inflight"  # the in-flight ZSET's name (see inflight.py; counted here)


@contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Turn redis-py and socket errors into `StoreUnavailable` ("cannot <what>: ...")."""
    try:
        yield
    except (RedisError, RedisClusterException, OSError) as exc:
        raise StoreUnavailable(f"cannot {what}: {exc}") from exc


# Redis' clock as exact text (TIME is seconds and microseconds).
_NOW_LUA = """
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
"""

# KEYS: state hash, events stream. ARGV: expected version ('' = any), channel, maxlen,
# generation for a new history, not_before ('' = none: refused while Redis' clock is
# earlier), number of state field pairs, the pairs, then the event pairs. Time fields
# whose value is SERVER_TIME get Redis' clock.
_CHANGE_LUA = (
    _NOW_LUA
    + """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= current then
  return {-1, tostring(current), '', ''}
end
if ARGV[5] ~= '' and tonumber(now) < tonumber(ARGV[5]) then
  return {-2, now, '', ''}
end
local generation = redis.call('HGET', KEYS[1], 'generation')
if not generation or generation == '' then generation = ARGV[4] end
local timed = {started_at = true, changed_at = true, at = true, opened_at = true}
local version = current + 1
local n = tonumber(ARGV[6])
local state = {}
for i = 7, 6 + 2 * n, 2 do
  local value = ARGV[i + 1]
  if timed[ARGV[i]] and value == 'now' then value = now end
  state[#state + 1] = ARGV[i]
  state[#state + 1] = value
end
state[#state + 1] = 'version'
state[#state + 1] = tostring(version)
state[#state + 1] = 'generation'
state[#state + 1] = generation
redis.call('HSET', KEYS[1], unpack(state))
local event = {}
for i = 7 + 2 * n, #ARGV, 2 do
  local value = ARGV[i + 1]
  if timed[ARGV[i]] and value == 'now' then value = now end
  event[#event + 1] = ARGV[i]
  event[#event + 1] = value
end
event[#event + 1] = 'version'
event[#event + 1] = tostring(version)
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(event))
-- The notification carries the new state, so a subscriber installs it without a read
-- (older subscribers find no stamp in it and re-read, as for any unreadable one).
local payload = cjson.encode(redis.call('HGETALL', KEYS[1]))
local stamp = generation .. ':' .. tostring(version)
if #payload > 65536 then  -- MAX_NOTICE_BYTES
  redis.call('PUBLISH', ARGV[2], stamp)
else
  redis.call('PUBLISH', ARGV[2], stamp .. '\\n' .. payload)
end
return {version, id, generation, payload}
"""
)

# KEYS: state hash, processes hash, then keys to read (a list's length, a string's value,
# a stream's last entry id, nil for anything else). ARGV: member, presence JSON, echo
# channel ('' none): the echo tells the caller's subscription it still receives (see
# `RedisSubscription`).
_POLL_LUA = """
local stamp = redis.call('HMGET', KEYS[1], 'generation', 'version')
local t = redis.call('TIME')
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], '1') end
local reads = {}
for i = 3, #KEYS do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind == 'list' then
    reads[i - 2] = tostring(redis.call('LLEN', KEYS[i]))
  elseif kind == 'string' then
    reads[i - 2] = redis.call('GET', KEYS[i])
  elseif kind == 'stream' then
    local last = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)
    reads[i - 2] = last[1] and last[1][1] or false
  else
    reads[i - 2] = false
  end
end
return {stamp[1] or '', stamp[2] or '', t[1], t[2], reads}
"""

# Restore a lost state only if nobody has written one since: the first process wins.
_RESTORE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = tonumber(ARGV[3])
local state = {}
for i = 4, 3 + 2 * n do state[#state + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(state))
local event = {}
for i = 4 + 2 * n, #ARGV do event[#event + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(event))
local stamp = redis.call('HMGET', KEYS[1], 'generation', 'version')
redis.call('PUBLISH', ARGV[1], (stamp[1] or '') .. ':' .. stamp[2])
return 1
"""


class RedisStore:
    """`StateStore` on Redis. All keys share one hash tag, so they live in one cluster slot.

    Raises `StoreUnavailable` (never a raw redis-py error) when Redis fails.
    """

    # A guard on this store lets its forked children follow its state (feed.py): they
    # would read the same Redis anyway.
    shares_with_children = True

    def __init__(self, client: redis.Redis[Any], prefix: str = "maintenance_guard") -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise InvalidInput(f"key prefix {prefix!r} must be non-empty and without braces")
        self.redis = client
        self.prefix = prefix
        self.state_key = self.key("state")
        self.events_key = self.key("events")
        self.attempts_key = self.key("attempts")
        self.test_records_key = self.key("test_attempts")  # read by validation.TestRecords
        self.inflight_key = self.key(INFLIGHT)
        self.channel = self.key("changes")
        self._change = client.register_script(_CHANGE_LUA)
        self._restore = client.register_script(_RESTORE_LUA)
        self._poll = client.register_script(_POLL_LUA)

    @classmethod
    def from_url(cls, url: str, prefix: str = "maintenance_guard") -> RedisStore:
        """Connect to ``url`` (not checked until first use)."""
        return cls(connect(url), prefix)

    def key(self, name: str) -> str:
        """The Redis key for ``name`` under this store's prefix."""
        return f"{{{self.prefix}}}:{name}"

    def ping(self) -> None:
        """Raise `StoreUnavailable` unless Redis answers."""
        with redis_errors("ping"):
            self.redis.ping()

    def load_state(self) -> MaintenanceStatus | None:
        """The stored state, or None when the store holds none (new, or lost)."""
        with redis_errors("read state"):
            fields = cast(dict[str, str], self.redis.hgetall(self.state_key))
        if not fields:
            return None
        return MaintenanceStatus.from_fields(fields)

    def poll(
        self,
        member: str,
        presence: Mapping[str, object],
        echo: str = "",
        reads: Sequence[str] = (),
    ) -> PollResult:
        """One round trip: the stored stamp, Redis' clock, and this process's presence;
        publishes to ``echo`` (a subscription's `echo_channel`) if given, and reads the
        keys ``reads`` (same hash tag): a list's length, a string's value, a stream's last
        entry id, else None."""
        # A script, not a pipeline: one slot, so it also runs on Redis Cluster (which
        # refuses a keyless TIME in a pipeline).
        with redis_errors("poll the state"):
            generation, version, seconds, micros, values = self._poll(
                keys=[self.state_key, self.key("processes"), *reads],
                args=[member, dump_json(presence), echo],
            )
        stamp = None if not version else StateStamp(generation or "", int(version))
        values = list(values) + [None] * (len(reads) - len(values))
        return PollResult(stamp, int(seconds) + int(micros) / 1_000_000, tuple(values))

    def change_state(
        self,
        fields: Mapping[str, str],
        event: Mapping[str, str],
        expected_version: int | None = None,
        *,
        not_before: float | None = None,
    ) -> MaintenanceStatus:
        """Write ``fields``, bump the version, log ``event`` and notify, atomically.

        Time fields given as `SERVER_TIME` get Redis' clock. Raises `ConcurrentChange` if
        ``expected_version`` is given and is not current, and `ChangeTooEarly` if Redis'
        clock is before ``not_before`` (epoch seconds).
        """
        args: list[str] = [
            "" if expected_version is None else str(expected_version),
            self.channel,
            str(EVENTS_MAXLEN),
            new_generation(),
            "" if not_before is None else repr(not_before),
            str(len(fields)),
        ]
        for k, v in fields.items():
            args += [k, v]
        for k, v in event.items():
            args += [k, v]
        with redis_errors("change state"):
            version, detail, _generation, payload = self._change(
                keys=[self.state_key, self.events_key], args=args
            )
        if int(version) == -2:
            raise ChangeTooEarly(f"Redis' clock ({detail}) is before {not_before}")
        if int(version) < 0:
            raise ConcurrentChange(
                f"state changed meanwhile (expected version {expected_version}, found {detail})"
            )
        log_audit_event({**event, "version": str(version)}, str(detail))
        flat = json.loads(payload)
        return MaintenanceStatus.from_fields(dict(zip(flat[::2], flat[1::2], strict=True)))

    def restore_state(self, status: MaintenanceStatus, event: Mapping[str, str]) -> bool:
        """Write ``status`` back if the store lost its state; True if this call did it."""
        fields = dict(status.to_fields())
        fields["version"] = str(status.version + 1)
        fields["generation"] = status.generation or new_generation()
        args = [self.channel, str(EVENTS_MAXLEN), str(len(fields))]
        for k, v in fields.items():
            args += [k, v]
        for k, v in {**event, "version": fields["version"]}.items():
            args += [k, v]
        with redis_errors("restore state"):
            done = self._restore(keys=[self.state_key, self.events_key], args=args)
        if done:
            log_audit_event({**event, "version": fields["version"]})
        return bool(done)

    def subscribe(self) -> Subscription:
        """Open a subscription to change notifications."""
        return RedisSubscription(self.redis, self.channel)

    def append_event(self, event: Mapping[str, str]) -> str:
        """Append an audit event that is not a state change; returns its stream id."""
        with redis_errors("append event"):
            event_id = cast(
                str,
                self.redis.xadd(
                    self.events_key, dict(event), maxlen=EVENTS_MAXLEN, approximate=True
                ),
            )
        log_audit_event(event, event_id)
        return event_id

    def read_events(self, limit: int = 50, since: float | None = None) -> list[AuditEvent]:
        """Audit events, newest first; ``since`` (epoch seconds) keeps only later ones."""
        low = "-" if since is None else f"{int(since * 1000)}-0"
        with redis_errors("read events"):
            rows = self.redis.xrevrange(self.events_key, "+", low, count=limit)
        return [_to_event(entry_id, fields) for entry_id, fields in rows]

    def record_attempts(
        self,
        counts: Mapping[str, int],
        records: Sequence[Mapping[str, str]],
        windows: Mapping[str, WindowTally] | None = None,
    ) -> None:
        """Add to the attempt counters, append test-mode records and add to the window
        tallies (layout in `impact_keys`), in one round trip."""
        if not counts and not records and not windows:
            return
        with redis_errors("record attempts"):
            pipe = self.redis.pipeline(transaction=False)
            queue_window_writes(pipe, self.key, windows or {})
            for field, n in counts.items():
                pipe.hincrby(self.attempts_key, field, n)
            # Test records go in batches (one stream entry per TEST_RECORDS_PER_ENTRY):
            # one XADD per record cost the flushing thread ~20 us of GIL time each.
            for i in range(0, len(records), TEST_RECORDS_PER_ENTRY):
                chunk = records[i : i + TEST_RECORDS_PER_ENTRY]
                pipe.xadd(
                    self.test_records_key,
                    {"records": dump_json([dict(r) for r in chunk]), "n": str(len(chunk))},
                    maxlen=TEST_ENTRIES_MAXLEN,
                    approximate=True,
                )
            pipe.execute()

    def read_attempt_counts(self) -> dict[str, int]:
        """The blocked-attempt counters."""
        with redis_errors("read attempt counts"):
            raw = cast(dict[str, str], self.redis.hgetall(self.attempts_key))
        return {k: int(v) for k, v in raw.items()}

    def read_window(self, window: str | None = None) -> StoredWindow | None:
        """What the store holds for maintenance window ``window`` (None: the last one
        written); None if it holds nothing."""
        with redis_errors("read a window's impact"):
            return read_window(self.redis, self.key, window)

    def count_inflight(self, now: float) -> int:
        """In-flight jobs whose heartbeat deadline has not passed."""
        with redis_errors("count in-flight jobs"):
            return int(self.redis.zcount(self.inflight_key, now, "+inf"))

    # --- process presence (each watcher says which state version it has seen) ---

    def record_presence(self, member: str, fields: Mapping[str, object]) -> None:
        """Write one process's presence record (JSON) into the processes hash."""
        with redis_errors("record presence"):
            self.redis.hset(self.key("processes"), member, dump_json(fields))

    def remove_presence(self, member: str) -> None:
        """Forget one process's presence record."""
        with redis_errors("remove presence"):
            self.redis.hdel(self.key("processes"), member)

    def read_presence(self) -> dict[str, dict[str, Any]]:
        """Every presence record, by member (``host:pid``); unreadable ones are skipped."""
        with redis_errors("read presence"):
            raw = cast(dict[str, str], self.redis.hgetall(self.key("processes")))
        out: dict[str, dict[str, Any]] = {}
        for member, value in raw.items():
            try:
                record = json.loads(value)
            except ValueError:
                continue
            if isinstance(record, dict):
                out[member] = record
        return out

    def prune_presence(self, older_than: float) -> int:
        """Forget presence records last written before ``older_than`` (epoch seconds)."""
        stale = [
            member
            for member, record in self.read_presence().items()
            if not isinstance(record.get("seen_at"), (int, float)) or record["seen_at"] < older_than
        ]
        if stale:
            with redis_errors("prune presence"):
                self.redis.hdel(self.key("processes"), *stale)
        return len(stale)


def _to_event(entry_id: str, fields: dict[str, str]) -> AuditEvent:
    rest = {k: v for k, v in fields.items() if k not in ("type", "at", "actor", "reason")}
    try:
        at = float(fields.get("at") or 0)
    except ValueError:
        at = int(entry_id.split("-")[0]) / 1000
    return AuditEvent(
        id=entry_id,
        type=fields.get("type", "unknown"),
        at=at or int(entry_id.split("-")[0]) / 1000,
        actor=fields.get("actor", ""),
        reason=fields.get("reason", ""),
        fields=rest,
    )
