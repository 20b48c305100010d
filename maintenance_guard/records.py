"""`RedisRecords`: the base of every record kept in Redis beside the state.

In-flight jobs, deferred work, emergency records and the admin signing secret each own
their key names (under the guard's key prefix, so they share its cluster slot) and turn
Redis failures into `StoreUnavailable`, as RQ's registries own theirs. Callers never
spell a key. They need a `RedisStore`; a `MemoryStore` is refused with a clear error.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from .errors import InvalidInput
from .store import RedisStore, StateStore, redis_errors


class RedisRecords:
    """Records of one kind under a store's key prefix. ``what`` names them in errors."""

    what = "these records"

    def __init__(self, store: StateStore) -> None:
        if not isinstance(store, RedisStore):
            raise InvalidInput(f"{self.what} need the Redis state store (a RedisStore)")
        self.store = store
        self.redis = store.redis

    def key(self, name: str) -> str:
        """The Redis key of ``name`` under the store's prefix."""
        return self.store.key(name)

    @staticmethod
    def errors(doing: str) -> AbstractContextManager[None]:
        """Translate Redis failures while ``doing`` into `StoreUnavailable`."""
        return redis_errors(doing)
