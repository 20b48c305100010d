"""The per-window impact keys on Redis (see `maintenance_guard.tally`): layout, writes
queued on a caller's pipeline, and reads.

Under the store's hash tag, so they share the state's cluster slot: ``impact:windows``
(ZSET: window id -> opened_at, the newest `MAX_WINDOWS` kept) and, per window,
``impact:<id>:counts`` (HASH: tally field -> n), ``impact:<id>:minutes`` (HASH: minute ->
refusals), ``impact:<id>:users`` (HyperLogLog of the user names refused) and
``impact:<id>:meta`` (HASH: opened_at, ended_at, reason, mode:<mode>). Every write renews
the expiry of the keys it touches (`IMPACT_RETENTION`), so a window's data goes away a
month after its last write, which is its end or a late flush just after.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from ..tally import IMPACT_RETENTION, StoredWindow, WindowTally

MAX_WINDOWS = 1000
PFADD_CHUNK = 1000

KeyOf = Callable[[str], str]


def window_key(key: KeyOf, window: str, part: str) -> str:
    """The key of one part (counts, minutes, users, meta) of ``window``."""
    return key(f"impact:{window}:{part}")


def queue_window_writes(pipe: Any, key: KeyOf, tallies: Mapping[str, WindowTally]) -> None:
    """Queue the additions of ``tallies`` on ``pipe`` (no round trip of their own)."""
    if not tallies:
        return
    index = key("impact:windows")
    for window, tally in tallies.items():
        touched = []
        if tally.counts:
            counts = window_key(key, window, "counts")
            for field, n in tally.counts.items():
                pipe.hincrby(counts, field, n)
            touched.append(counts)
        if tally.minutes:
            minutes = window_key(key, window, "minutes")
            for minute, n in tally.minutes.items():
                pipe.hincrby(minutes, str(minute), n)
            touched.append(minutes)
        if tally.users:
            users = window_key(key, window, "users")
            names = sorted(tally.users)
            for i in range(0, len(names), PFADD_CHUNK):
                pipe.pfadd(users, *names[i : i + PFADD_CHUNK])
            touched.append(users)
        meta = window_key(key, window, "meta")
        if tally.meta:
            pipe.hset(meta, mapping=dict(tally.meta))
        touched.append(meta)
        pipe.zadd(index, {window: float(window)})
        for name in touched:
            pipe.expire(name, IMPACT_RETENTION)
    pipe.zremrangebyrank(index, 0, -MAX_WINDOWS - 1)
    pipe.expire(index, IMPACT_RETENTION)


def read_window(client: Any, key: KeyOf, window: str | None) -> StoredWindow | None:
    """What the store holds for ``window`` (None: the last one written); None if
    nothing. Two round trips (three for the last one); admin reads only."""
    if window is None:
        newest = latest_windows(client, key, 1)
        if not newest:
            return None
        window = newest[0]
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(window_key(key, window, "counts"))
    pipe.hgetall(window_key(key, window, "minutes"))
    pipe.hgetall(window_key(key, window, "meta"))
    counts, minutes, meta = pipe.execute()
    if not (counts or minutes or meta):
        return None
    # Not in the pipeline: redis-py refuses PFCOUNT in a cluster pipeline.
    users = client.pfcount(window_key(key, window, "users"))
    return StoredWindow(
        window=window,
        counts={str(k): int(v) for k, v in cast(dict[str, str], counts).items()},
        minutes={int(k): int(v) for k, v in cast(dict[str, str], minutes).items()},
        distinct_users=int(users or 0),
        meta={str(k): str(v) for k, v in cast(dict[str, str], meta).items()},
    )


def latest_windows(client: Any, key: KeyOf, limit: int) -> list[str]:
    """The ids of the last ``limit`` windows written, newest first."""
    return [str(w) for w in client.zrevrange(key("impact:windows"), 0, max(0, limit - 1))]
