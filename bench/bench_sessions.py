"""Benchmark: invalidate 100,000 Flask-Session sessions (10% admin) on a real Redis.

Usage: python bench/bench_sessions.py [--n 100000] [--redis-url URL]. Target: <= 3 s.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

import msgspec
import redis

from maintenance_guard.sessions import SessionInvalidator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--admin-every", type=int, default=10)
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()

    client = redis.Redis.from_url(args.redis_url)
    prefix = f"bench-{uuid.uuid4().hex[:8]}:session:"
    encode = msgspec.msgpack.Encoder().encode
    pipe = client.pipeline(transaction=False)
    for i in range(args.n):
        data = {"_permanent": True, "_user_id": str(i), "_fresh": True, "csrf_token": "x" * 40}
        if i % args.admin_every == 0:
            data["is_admin"] = True
        pipe.set(f"{prefix}{uuid.uuid4().hex}", encode(data), ex=3600)
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()
    admins = (args.n + args.admin_every - 1) // args.admin_every

    try:
        started = time.perf_counter()
        result = SessionInvalidator(client, prefix).invalidate_non_admin()
        seconds = time.perf_counter() - started
        left = sum(1 for _ in client.scan_iter(match=f"{prefix}*", count=5000))
        # SCAN may return a key twice while Redis rehashes (other clients writing), so
        # "scanned" can exceed n; what must hold exactly is below.
        assert result.scanned >= args.n, result
        assert result.invalidated == args.n - admins and left == admins, (result, left)
        print(f"sessions scanned:      {result.scanned}")
        print(f"invalidated (non-admin): {result.invalidated}; admin kept: {result.kept_admin}")
        print(f"seconds:               {seconds:.3f}  (target <= 3.0)")
        print(f"sessions/s:            {result.scanned / seconds:,.0f}")
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=5000))
        for i in range(0, len(keys), 5000):
            client.unlink(*keys[i : i + 5000])
        client.close()


if __name__ == "__main__":
    main()
