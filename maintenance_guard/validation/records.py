"""The test-mode records in Redis: the stream the guards flush recorded attempts to, and
the test counters beside the real refusal counters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

from ..events import TEST_KINDS
from ..records import RedisRecords
from ..store import StateStore


class TestRecords(RedisRecords):
    """Reads and clears the test-mode records of one key prefix. Raises
    `StoreUnavailable`."""

    __test__ = False  # not a pytest test class, despite the name
    what = "test-mode records"

    def __init__(self, store: StateStore) -> None:
        super().__init__(store)
        self.stream_key = self.key("test_attempts")
        self.attempts_key = self.key("attempts")

    def read(self, start: float, batch: int = 10_000) -> Iterator[dict[str, str]]:
        """Records flushed at or after ``start`` (epoch seconds), oldest first."""
        low = f"{int(start * 1000)}-0"
        while True:
            with self.errors("read test records"):
                rows = self.redis.xrange(self.stream_key, low, "+", count=batch)
            for _entry_id, fields in rows:
                if "records" not in fields:
                    yield fields  # a single record
                    continue
                try:
                    packed: Any = json.loads(fields["records"])
                except ValueError:
                    continue
                items: list[Any] = packed if isinstance(packed, list) else []
                for record in items:
                    if isinstance(record, dict):
                        yield record
            if len(rows) < batch:
                return
            low = "(" + rows[-1][0]

    def clear(self) -> int:
        """Delete the records and test counters; returns the attempts they held."""
        with self.errors("clear test data"):
            counters = cast(dict[str, str], self.redis.hgetall(self.attempts_key))
            fields = [f for f in counters if f.split(":", 1)[0] in TEST_KINDS]
            records = sum(
                int(v) for f, v in counters.items() if f.split(":", 1)[0] == "would_block"
            )
            pipe = self.redis.pipeline(transaction=True)
            pipe.delete(self.stream_key)
            if fields:
                pipe.hdel(self.attempts_key, *fields)
            pipe.execute()
        return records
