"""Non-admin session invalidation for emergencies, on Flask-Session's Redis layout.

Flask-Session keeps one Redis string per session: the key is ``key_prefix + sid``
(default prefix ``session:``) and the value is the session dict serialised with msgpack
(0.7 and later, the default), JSON (``SESSION_SERIALIZATION_FORMAT = "json"``) or pickle
(before 0.7). Sessions are scanned in batches (SCAN with COUNT), read with one pipelined
GET per batch, and the non-admin ones deleted by a script that unlinks a key only if its
value is still the one that was judged, so a session changed meanwhile is judged again
(up to five times; a non-admin session still being rewritten after that is deleted anyway,
so a busy client cannot outrun the emergency).
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisError

from .errors import InvalidInput, StoreUnavailable
from .urls import mask_url, redact

logger = logging.getLogger("maintenance_guard")

SessionPredicate = Callable[[Mapping[str, Any]], bool]

DEFAULT_SESSION_PREFIX = "session:"
# A session rewritten between our read and our delete is judged again, this many times
# at most; the last time a non-admin one is deleted without the unchanged-value check.
REJUDGE_ROUNDS = 5
FORMATS = ("msgpack", "json", "pickle")

# KEYS: session keys; ARGV: the values judged. Unlinks a key only if unchanged;
# returns 1 (unlinked), 0 (gone already) or -1 (changed: judge again) per key.
_UNLINK_IF_UNCHANGED_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  if current == false then
    out[i] = 0
  elseif current == ARGV[i] then
    redis.call('UNLINK', key)
    out[i] = 1
  else
    out[i] = -1
  end
end
return out
"""


def admin_predicate(
    flag_key: str | None = "is_admin",
    *,
    user_id_key: str = "_user_id",
    admin_user_ids: Iterable[object] = (),
) -> SessionPredicate:
    """A predicate saying a session dict belongs to an admin.

    True when ``session[flag_key]`` is truthy, or when ``session[user_id_key]`` (Flask-Login
    stores the user id under ``_user_id``) is one of ``admin_user_ids`` (compared as text).
    """
    ids = frozenset(str(i) for i in admin_user_ids)

    def is_admin(session: Mapping[str, Any]) -> bool:
        if flag_key is not None and session.get(flag_key):
            return True
        if ids:
            user_id = session.get(user_id_key)
            return user_id is not None and str(user_id) in ids
        return False

    return is_admin


@dataclass(frozen=True)
class SessionInvalidationResult:
    """What one invalidation pass did."""

    key_prefix: str
    scanned: int
    invalidated: int
    kept_admin: int
    undecodable: int  # counted in ``invalidated``: an unreadable session cannot prove admin
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


@dataclass(frozen=True)
class SessionCount:
    """Sessions under one prefix by role, counted without changing any."""

    admin: int
    non_admin: int
    undecodable: int  # counted in ``non_admin``: nothing shows they are an admin's
    truncated: bool  # the scan stopped at its limit: at least these many

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


def session_counter(
    client: redis.Redis[Any],
    key_prefix: str = DEFAULT_SESSION_PREFIX,
    is_admin: SessionPredicate | None = None,
) -> SessionInvalidator:
    """A `SessionInvalidator` to count with (`SessionInvalidator.count_by_role`): it reads
    msgpack and JSON sessions, or JSON only when msgspec is not installed. Raises
    `InvalidInput` for what no invalidator can read (sessions on a Redis Cluster)."""
    try:
        return SessionInvalidator(client, key_prefix, is_admin)
    except InvalidInput as exc:
        if "msgspec" not in str(exc):
            raise
        return SessionInvalidator(client, key_prefix, is_admin, formats=("json",))


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _bytes_client(client: redis.Redis[Any]) -> redis.Redis[Any]:
    """``client`` itself, or a client on the same server that returns bytes."""
    kwargs = dict(client.connection_pool.connection_kwargs)
    if not kwargs.get("decode_responses"):
        return client
    kwargs["decode_responses"] = False
    pool = redis.ConnectionPool(connection_class=client.connection_pool.connection_class, **kwargs)
    return redis.Redis(connection_pool=pool)


class SessionInvalidator:
    """Deletes the non-admin Flask-Session sessions stored in one Redis, admin ones kept.

    ``formats`` are tried in order to decode a value; pickle runs only when listed (it
    executes code from the data: list it only for Flask-Session before 0.7 whose Redis is
    trusted). A session no format decodes is invalidated. Thread-safe.
    """

    def __init__(
        self,
        client: redis.Redis[Any],
        key_prefix: str = DEFAULT_SESSION_PREFIX,
        is_admin: SessionPredicate | None = None,
        *,
        batch_size: int = 1000,
        formats: Collection[str] = ("msgpack", "json"),
    ) -> None:
        if not isinstance(key_prefix, str) or not key_prefix:
            raise InvalidInput("session key prefix must be a non-empty string")
        if isinstance(client, RedisCluster):
            # The batches are checked and unlinked by one script per batch, which needs
            # its keys in one slot; Flask-Session's keys are spread over every slot.
            raise InvalidInput(
                "session invalidation needs the sessions on one Redis (or a Sentinel "
                "master), not on a Redis Cluster"
            )
        if not 10 <= batch_size <= 10_000:
            raise InvalidInput("session batch_size must be between 10 and 10000")
        unknown = [f for f in formats if f not in FORMATS]
        if unknown or not formats:
            raise InvalidInput(
                f"session formats must be some of {', '.join(FORMATS)}, not {list(formats)}"
            )
        self.client = _bytes_client(client)
        self.key_prefix = key_prefix
        self.is_admin = is_admin or admin_predicate()
        self.batch_size = batch_size
        self.formats = tuple(formats)
        self._decoders = [self._decoder(f) for f in self.formats]
        self._unlink = self.client.register_script(_UNLINK_IF_UNCHANGED_LUA)

    @classmethod
    def from_url(
        cls, url: str, key_prefix: str = DEFAULT_SESSION_PREFIX, **options: Any
    ) -> SessionInvalidator:
        """An invalidator for the sessions in the Redis at ``url``."""
        try:
            client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=2)
        except ValueError as exc:
            raise InvalidInput(
                f"not a usable Redis URL {mask_url(url)!r}: {redact(str(exc), url)}"
            ) from None
        return cls(client, key_prefix, **options)

    @staticmethod
    def _decoder(name: str) -> Callable[[bytes], object]:
        if name == "msgpack":
            try:
                import msgspec
            except ImportError:
                raise InvalidInput(
                    "reading msgpack sessions needs msgspec: pip install 'maintenance-guard[flask]'"
                ) from None
            return cast(Callable[[bytes], object], msgspec.msgpack.Decoder().decode)
        if name == "json":
            return cast(Callable[[bytes], object], json.loads)
        return cast(Callable[[bytes], object], pickle.loads)

    def decode(self, raw: bytes) -> Mapping[str, Any] | None:
        """The session dict stored as ``raw``, or None if no configured format reads it."""
        for decode in self._decoders:
            try:
                value = decode(raw)
            except Exception:  # each format fails in its own way on the others' bytes
                continue
            if isinstance(value, Mapping):
                return value
        return None

    def _is_admin(self, raw: bytes) -> bool | None:
        session = self.decode(raw)
        if session is None:
            return None
        try:
            return bool(self.is_admin(session))
        except Exception:
            logger.exception("session admin predicate failed; treating the session as non-admin")
            return False

    def count_by_role(self, limit: int = 20_000) -> SessionCount:
        """Count the sessions under the prefix by admin and non-admin, reading at most
        about ``limit`` of them (SCAN in batches, one pipelined GET per batch; deletes
        nothing). Blocking; raises `StoreUnavailable`."""
        admin = non_admin = undecodable = 0
        match = _glob_escape(self.key_prefix) + "*"
        try:
            cursor = 0
            while True:
                cursor, keys = self.client.scan(cursor, match=match, count=self.batch_size)
                pipe = self.client.pipeline(transaction=False)
                for key in keys:
                    pipe.get(key)
                for raw in pipe.execute() if keys else []:
                    verdict = None if raw is None else self._is_admin(raw)
                    admin += verdict is True
                    non_admin += raw is not None and verdict is not True
                    undecodable += raw is not None and verdict is None
                if cursor == 0 or admin + non_admin >= limit:
                    break
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"cannot count sessions: {exc}") from exc
        return SessionCount(admin, non_admin, undecodable, truncated=cursor != 0)

    def invalidate_non_admin(self) -> SessionInvalidationResult:
        """Delete every non-admin session under the prefix; keep admin ones.

        Blocking; raises `StoreUnavailable` if Redis fails midway (sessions deleted so far
        stay deleted, running it again finishes the job).
        """
        started = time.perf_counter()
        scanned = invalidated = kept = undecodable = 0
        match = _glob_escape(self.key_prefix) + "*"
        try:
            cursor = 0
            while True:
                cursor, keys = self.client.scan(cursor, match=match, count=self.batch_size)
                if keys:
                    done = self._judge_batch(list(keys))
                    scanned += done[0]
                    invalidated += done[1]
                    kept += done[2]
                    undecodable += done[3]
                if cursor == 0:
                    break
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"cannot invalidate sessions: {exc}") from exc
        result = SessionInvalidationResult(
            self.key_prefix,
            scanned,
            invalidated,
            kept,
            undecodable,
            round(time.perf_counter() - started, 3),
        )
        logger.info(
            "invalidated %d non-admin sessions (%d admin kept)",
            invalidated,
            kept,
            extra={
                "mg_event": "sessions_invalidated",
                **{f"mg_{k}": v for k, v in asdict(result).items()},
            },
        )
        return result

    def _judge_batch(self, keys: list[bytes]) -> tuple[int, int, int, int]:
        scanned = invalidated = kept = undecodable = 0
        pending = keys
        for round_ in range(REJUDGE_ROUNDS):
            if not pending:
                break
            pipe = self.client.pipeline(transaction=False)
            for key in pending:
                pipe.get(key)
            values = pipe.execute()
            doomed: list[tuple[bytes, bytes]] = []
            for key, raw in zip(pending, values, strict=True):
                if raw is None:
                    continue
                if round_ == 0:
                    scanned += 1
                verdict = self._is_admin(raw)
                if verdict:
                    kept += 1
                    continue
                if verdict is None:
                    undecodable += 1
                doomed.append((key, raw))
            if not doomed:
                break
            if round_ == REJUDGE_ROUNDS - 1:
                # Still rewritten after every judgement, and its latest value is not an
                # admin's: delete it anyway, so a busy client cannot outrun the emergency.
                pipe = self.client.pipeline(transaction=False)
                for key, _raw in doomed:
                    pipe.unlink(key)
                invalidated += sum(int(n) for n in pipe.execute())
                break
            outcome = self._unlink(keys=[k for k, _ in doomed], args=[v for _, v in doomed])
            pending = []
            for (key, raw), code in zip(doomed, outcome, strict=True):
                if code == 1:
                    invalidated += 1
                elif code == -1:
                    # Changed since it was read: judge the new value.
                    pending.append(key)
                    if self.decode(raw) is None:
                        undecodable -= 1
        return scanned, invalidated, kept, undecodable
