"""100,000 Flask-Session sessions in a real Redis: every non-admin one invalidated, every
admin one kept, none missed, while users keep touching their sessions."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import redis

from maintenance_guard.sessions import SessionInvalidator

SESSIONS = 100_000
ADMIN_EVERY = 100
BUSY_USERS = 300


@pytest.fixture
def bytes_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def encode_session(data: dict[str, Any]) -> bytes:
    return msgspec.msgpack.Encoder().encode(data)


@pytest.mark.slow
def test_100k_sessions_invalidated_admins_kept_none_missed_while_users_stay_active(
    bytes_client: redis.Redis, key_prefix: str, redis_url: str
) -> None:
    prefix = f"{{{key_prefix}}}:session:"
    admin_keys: set[bytes] = set()
    user_keys: list[bytes] = []
    pipe = bytes_client.pipeline(transaction=False)
    for i in range(SESSIONS):
        key = f"{prefix}{i:06d}".encode()
        data: dict[str, Any] = {"_permanent": True, "_user_id": str(i), "n": 0}
        if i % ADMIN_EVERY == 0:
            data["is_admin"] = True
            admin_keys.add(key)
        else:
            user_keys.append(key)
        pipe.set(key, encode_session(data), ex=3600)
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()

    # Busy users rewrite their sessions (Flask-Session saves on every response) all along;
    # SET XX never brings a deleted session back, as a request after invalidation would not.
    busy = random.Random(7).sample(user_keys, BUSY_USERS) + random.Random(8).sample(
        sorted(admin_keys), 50
    )
    stop = threading.Event()
    writes = [0]

    def touch_sessions() -> None:
        client = redis.Redis.from_url(redis_url)
        n = 0
        while not stop.is_set():
            n += 1
            tpipe = client.pipeline(transaction=False)
            for key in busy:
                i = int(key.rsplit(b":", 1)[1])
                data: dict[str, Any] = {"_permanent": True, "_user_id": str(i), "n": n}
                if key in admin_keys:
                    data["is_admin"] = True
                tpipe.set(key, encode_session(data), ex=3600, xx=True)
            tpipe.execute()
            writes[0] += len(busy)
        client.close()

    toucher = threading.Thread(target=touch_sessions, daemon=True)
    toucher.start()
    try:
        result = SessionInvalidator(bytes_client, prefix, batch_size=1000).invalidate_non_admin()
    finally:
        stop.set()
        toucher.join(10)

    left = set(bytes_client.scan_iter(match=f"{prefix}*", count=5000))
    missed = left - admin_keys
    assert not missed, f"{len(missed)} non-admin sessions survived, e.g. {sorted(missed)[:3]}"
    assert left == admin_keys  # no admin session lost
    assert result.kept_admin >= len(admin_keys)
    assert result.invalidated == SESSIONS - len(admin_keys)
    assert writes[0] > 0  # the users really were active during the pass


def test_a_non_admin_session_rewritten_nonstop_during_the_pass_is_still_invalidated(
    bytes_client: redis.Redis, key_prefix: str, redis_url: str
) -> None:
    """A client that changes its session on every request (as fast as it can) must not
    keep it through an emergency: the pass may judge it again, but may not give up."""
    prefix = f"{{{key_prefix}}}:session:"
    pipe = bytes_client.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"{prefix}{i:06d}".encode(), encode_session({"_user_id": str(i)}), ex=3600)
    pipe.execute()
    hammered = [f"{prefix}{i:06d}".encode() for i in (3, 1500)]
    stop = threading.Event()

    def hammer(key: bytes) -> None:
        client = redis.Redis.from_url(redis_url)
        n = 0
        while not stop.is_set():
            n += 1
            if not client.set(key, encode_session({"_user_id": "x", "n": n}), ex=3600, xx=True):
                break  # deleted: the pass got it
        client.close()

    threads = [threading.Thread(target=hammer, args=(k,), daemon=True) for k in hammered * 2]
    for t in threads:
        t.start()
    try:
        SessionInvalidator(bytes_client, prefix, batch_size=100).invalidate_non_admin()
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    left = set(bytes_client.scan_iter(match=f"{prefix}*", count=1000))
    assert left == set(), f"non-admin sessions survived the pass: {sorted(left)}"
