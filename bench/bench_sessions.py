"""Benchmark: invalidate 100,000 Flask-Session sessions (10% admin) on a real Redis,
against the physical limit of the same job done with plain redis-py calls.

Each run writes a fresh set of sessions (msgpack, as Flask-Session 0.7+ stores them),
times one side on it and deletes what is left, then does the same for the other side on
an identical fresh set, so both sides meet the same database size:

- guard: `SessionInvalidator.invalidate_non_admin` (SCAN MATCH ``prefix*`` COUNT 1000, a
  pipelined GET per batch, a decode and the admin predicate per session, then one script
  per batch that unlinks each non-admin session only if its value is still the one judged);
- baseline: the same SCAN (same MATCH and COUNT), the same pipelined GET per batch, a
  msgpack decode and an ``is_admin`` lookup per session, then one pipelined UNLINK of the
  batch's non-admin keys. That is the least any invalidation must do: it has to read a
  session to tell an admin's apart.

Usage: python bench/bench_sessions.py [--n 100000] [--baseline-first] [--redis-url URL].
Prints ``seconds:`` (guard), ``baseline seconds:`` and ``ratio:`` lines.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

import msgspec
import redis

from maintenance_guard.sessions import SessionInvalidator

BATCH = 1000  # SessionInvalidator's default batch_size: its SCAN COUNT


def write_sessions(client: redis.Redis[bytes], prefix: str, n: int, admin_every: int) -> int:
    """``n`` sessions under ``prefix``, every ``admin_every``-th an admin's; returns how
    many admins."""
    encode = msgspec.msgpack.Encoder().encode
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        data = {"_permanent": True, "_user_id": str(i), "_fresh": True, "csrf_token": "x" * 40}
        if i % admin_every == 0:
            data["is_admin"] = True
        pipe.set(f"{prefix}{uuid.uuid4().hex}", encode(data), ex=3600)
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()
    return (n + admin_every - 1) // admin_every


def plain_invalidation(client: redis.Redis[bytes], prefix: str) -> tuple[int, int, int]:
    """The baseline: SCAN, pipelined GET, decode, pipelined UNLINK of the non-admin keys.
    Returns (sessions read, unlinked, admin kept)."""
    decode = msgspec.msgpack.Decoder().decode
    read = unlinked = kept = 0
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor, match=f"{prefix}*", count=BATCH)
        if keys:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
            values = pipe.execute()
            pipe = client.pipeline(transaction=False)
            for key, raw in zip(keys, values, strict=True):
                if raw is None:  # returned twice by SCAN and already unlinked
                    continue
                read += 1
                if decode(raw).get("is_admin"):
                    kept += 1
                else:
                    pipe.unlink(key)
            unlinked += sum(int(n) for n in pipe.execute())
        if cursor == 0:
            return read, unlinked, kept


def left_under(client: redis.Redis[bytes], prefix: str) -> list[bytes]:
    # A set: SCAN may return a key twice while Redis rehashes.
    return list(set(client.scan_iter(match=f"{prefix}*", count=5000)))


def delete_under(client: redis.Redis[bytes], prefix: str) -> None:
    keys = left_under(client, prefix)
    for i in range(0, len(keys), 5000):
        client.unlink(*keys[i : i + 5000])


def run_guard(client: redis.Redis[bytes], prefix: str, n: int, admins: int) -> float:
    started = time.perf_counter()
    result = SessionInvalidator(client, prefix, batch_size=BATCH).invalidate_non_admin()
    seconds = time.perf_counter() - started
    left = len(left_under(client, prefix))
    # SCAN may return a key twice while Redis rehashes (other clients writing), so
    # "scanned" can exceed n; what must hold exactly is below.
    assert result.scanned >= n, result
    assert result.invalidated == n - admins and left == admins, (result, left)
    print(f"guard: invalidated {result.invalidated} (non-admin), kept {result.kept_admin} admin")
    return seconds


def run_baseline(client: redis.Redis[bytes], prefix: str, n: int, admins: int) -> float:
    started = time.perf_counter()
    read, unlinked, kept = plain_invalidation(client, prefix)
    seconds = time.perf_counter() - started
    left = len(left_under(client, prefix))
    assert read >= n and unlinked == n - admins and left == admins, (read, unlinked, left)
    print(f"baseline: unlinked {unlinked} (non-admin), kept {kept} admin")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--admin-every", type=int, default=10)
    parser.add_argument("--baseline-first", action="store_true")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()

    client = redis.Redis.from_url(args.redis_url)
    # No glob characters in the prefixes: MATCH "prefix*" is what the guard sends too.
    prefixes = {side: f"bench-{uuid.uuid4().hex[:8]}:session:" for side in ("guard", "baseline")}
    sides = ["baseline", "guard"] if args.baseline_first else ["guard", "baseline"]
    seconds: dict[str, float] = {}
    try:
        for side in sides:
            prefix = prefixes[side]
            admins = write_sessions(client, prefix, args.n, args.admin_every)
            run = run_guard if side == "guard" else run_baseline
            seconds[side] = run(client, prefix, args.n, admins)
            delete_under(client, prefix)
        guard, baseline = seconds["guard"], seconds["baseline"]
        print(f"order:                 {' then '.join(sides)}")
        print(f"seconds:               {guard:.3f}")
        print(f"baseline seconds:      {baseline:.3f}  (SCAN + pipelined GET + UNLINK)")
        print(f"ratio:                 {guard / baseline:.2f}")
        print(f"sessions/s:            {args.n / guard:,.0f}")
    finally:
        for prefix in prefixes.values():
            delete_under(client, prefix)
        client.close()


if __name__ == "__main__":
    main()
