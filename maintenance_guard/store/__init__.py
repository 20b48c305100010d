"""Storage behind a narrow interface: the `StateStore` protocol, `RedisStore` (the real
one) and `MemoryStore` (in process memory, for tests).

Every change to the state is atomic (a Lua script on Redis), versioned, audited and
published; see `redis_store` for the key layout.
"""

from .connect import connect
from .memory import MemoryStore
from .protocol import (
    SERVER_TIME,
    AuditEvent,
    Notice,
    PollResult,
    StateStamp,
    StateStore,
    Subscription,
    dump_json,
    event_fields,
    new_generation,
)
from .redis_store import (
    EVENTS_MAXLEN,
    INFLIGHT,
    TEST_ENTRIES_MAXLEN,
    TEST_RECORDS_PER_ENTRY,
    RedisStore,
    redis_errors,
)

__all__ = [
    "EVENTS_MAXLEN",
    "INFLIGHT",
    "SERVER_TIME",
    "TEST_ENTRIES_MAXLEN",
    "TEST_RECORDS_PER_ENTRY",
    "AuditEvent",
    "MemoryStore",
    "Notice",
    "PollResult",
    "RedisStore",
    "StateStamp",
    "StateStore",
    "Subscription",
    "connect",
    "dump_json",
    "event_fields",
    "new_generation",
    "redis_errors",
]
