"""The bypass URL's cookie and the limit on wrong guesses of its secret.

The cookie is signed with the app's ``SECRET_KEY`` (itsdangerous) and carries an HMAC of
the bypass secret keyed by that same ``SECRET_KEY``: it binds the cookie to the current
secret (changing either revokes every cookie) without letting anyone who reads the cookie
test guesses of the secret offline.

Wrong guesses are counted per client address and in total over a fixed window, in Redis
under the guard's key prefix (so the limit holds fleet-wide), or in this process's memory
when the store is not Redis or does not answer. Past either limit every attempt, right or
wrong, gets 429 until the window ends, so the limit never tells a guess apart.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable

from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..errors import StoreUnavailable
from ..records import RedisRecords
from ..store import RedisStore, StateStore

logger = logging.getLogger("maintenance_guard")

BYPASS_COOKIE = "maintenance_guard_bypass"
_SALT = "maintenance-guard-bypass"

# KEYS: per-address counter, total counter. ARGV: window seconds. One round trip; each
# counter's window starts at its first failure.
_COUNT_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, ARGV[1]) end
  out[i] = n
end
return out
"""


def _key_bytes(secret_key: str | bytes) -> bytes:
    return secret_key if isinstance(secret_key, bytes) else str(secret_key).encode()


def bypass_fingerprint(secret_key: str | bytes, bypass_secret: str) -> str:
    """HMAC-SHA256 of the bypass secret keyed by ``SECRET_KEY`` (hex, 32 characters)."""
    digest = hmac.new(_key_bytes(secret_key), str(bypass_secret).encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def make_cookie(secret_key: str | bytes, bypass_secret: str) -> str:
    """A signed cookie value for the current secrets."""
    serializer = URLSafeTimedSerializer(secret_key, salt=_SALT)
    return serializer.dumps({"fp": bypass_fingerprint(secret_key, bypass_secret)})


def cookie_is_valid(value: str, secret_key: str | bytes, bypass_secret: str, max_age: int) -> bool:
    """True if ``value`` is an unexpired cookie made with these secrets."""
    serializer = URLSafeTimedSerializer(secret_key, salt=_SALT)
    try:
        data = serializer.loads(value, max_age=max_age)
    except BadSignature:  # also SignatureExpired
        return False
    return isinstance(data, dict) and hmac.compare_digest(
        str(data.get("fp", "")), bypass_fingerprint(secret_key, bypass_secret)
    )


class _MemoryCounters:
    """Fixed-window counters in this process (the fallback). Thread-safe, bounded."""

    def __init__(self, clock: Callable[[], float], limit: int = 10_000) -> None:
        self._clock = clock
        self._limit = limit
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}

    def _live(self, key: str, now: float) -> tuple[int, float] | None:
        entry = self._counts.get(key)
        if entry is not None and entry[1] <= now:
            del self._counts[key]
            return None
        return entry

    def add(self, keys: list[str], window: float) -> None:
        now = self._clock()
        with self._lock:
            if len(self._counts) >= self._limit:
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
                if len(self._counts) >= self._limit:  # a flood of addresses: start over
                    self._counts.clear()
            for key in keys:
                entry = self._live(key, now)
                count, ends = entry if entry is not None else (0, now + window)
                self._counts[key] = (count + 1, ends)

    def read(self, keys: list[str]) -> list[tuple[int, float]]:
        """(count, seconds left) per key."""
        now = self._clock()
        with self._lock:
            out = []
            for key in keys:
                entry = self._live(key, now)
                out.append((0, 0.0) if entry is None else (entry[0], entry[1] - now))
            return out


def _counter_names(address: str) -> list[str]:
    return [f"bypass_failures:addr:{address[:64]}", "bypass_failures:total"]


class _RedisCounters(RedisRecords):
    """The same counters in Redis under the guard's key prefix, shared by the fleet."""

    what = "bypass attempt counters"

    def __init__(self, store: StateStore) -> None:
        super().__init__(store)
        self._count = self.redis.register_script(_COUNT_LUA)

    def keys(self, address: str) -> list[str]:
        return [self.key(name) for name in _counter_names(address)]

    def add(self, keys: list[str], window: int) -> None:
        with self.errors("count a wrong bypass secret"):
            self._count(keys=keys, args=[window])

    def read(self, keys: list[str]) -> list[tuple[int, int]]:
        """(count, milliseconds to expiry or <= 0 for none) per key."""
        with self.errors("read the bypass attempt counters"):
            pipe = self.redis.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
                pipe.pttl(key)
            raw = pipe.execute()
        return [(int(raw[2 * i] or 0), int(raw[2 * i + 1])) for i in range(len(keys))]


class FailedAttemptLimiter:
    """Counts wrong bypass secrets per address and in total; says when to refuse.

    ``store`` is the guard's store: a `RedisStore` keeps the counts fleet-wide; any other
    store (or a Redis error) falls back to counts in this process.
    """

    def __init__(
        self,
        store: StateStore,
        *,
        per_address: int,
        total: int,
        window: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_address = per_address
        self.total = total
        self.window = max(1, int(window))
        self._memory = _MemoryCounters(clock)
        self._redis = _RedisCounters(store) if isinstance(store, RedisStore) else None

    def _keys(self, address: str) -> list[str]:
        return self._redis.keys(address) if self._redis is not None else _counter_names(address)

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None if it may try now."""
        keys = self._keys(address)
        counts = self._read(keys)
        waits = [
            left
            for (count, left), limit in zip(counts, (self.per_address, self.total), strict=True)
            if count >= limit
        ]
        if not waits:
            return None
        return max(1, int(max(waits) + 0.999))

    def record_failure(self, address: str) -> None:
        """Count one wrong secret from ``address``."""
        keys = self._keys(address)
        if self._redis is not None:
            try:
                self._redis.add(keys, self.window)
                return
            except StoreUnavailable as exc:
                logger.warning("bypass attempt counter: Redis failed, counting in memory: %s", exc)
        self._memory.add(keys, self.window)

    def _read(self, keys: list[str]) -> list[tuple[int, float]]:
        memory = self._memory.read(keys)
        if self._redis is None:
            return memory
        try:
            stored = self._redis.read(keys)
        except StoreUnavailable as exc:
            logger.warning("bypass attempt counter: Redis failed, reading memory: %s", exc)
            return memory
        out = []
        for (count, ttl_ms), (mem_count, mem_left) in zip(stored, memory, strict=True):
            left = ttl_ms / 1000 if ttl_ms > 0 else float(self.window)
            # Failures counted in memory during an outage still count.
            if mem_count > count:
                count, left = mem_count, mem_left
            out.append((count, left))
        return out
