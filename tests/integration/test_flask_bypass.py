"""The bypass URL under guessing (429 with Retry-After per address and in total, shared by
every process through Redis, in memory when Redis is down) and a cookie that reveals
nothing about the secret. Real threaded HTTP servers, real Redis."""

from __future__ import annotations

import base64
import hashlib
import http.client as httpclient
import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask

from maintenance_guard import MaintenanceGuard
from maintenance_guard.flask import BYPASS_COOKIE
from tests.conftest import RedisServer
from tests.e2e.flask_support import LiveServer, build_app

SECRET = "let-me-in-0123456789"


def bypass_app(guard: MaintenanceGuard, **config: Any) -> Flask:
    settings: dict[str, Any] = {
        "BYPASS_SECRET": SECRET,
        "BYPASS_MAX_FAILURES_PER_ADDRESS": 5,
        "BYPASS_MAX_FAILURES": 12,
        "BYPASS_FAILURE_WINDOW": 600,
    }
    settings.update(config)
    return build_app(guard, **settings)


def visit(server: LiveServer, secret: str, source: str = "127.0.0.1") -> tuple[int, dict[str, str]]:
    """GET the bypass URL from the loopback address ``source`` (127.0.0.0/8 is all local)."""
    conn = httpclient.HTTPConnection(
        "127.0.0.1", server.port, timeout=10, source_address=(source, 0)
    )
    try:
        conn.request("GET", f"/maintenance/bypass/{secret}")
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def test_wrong_guesses_are_limited_per_address_and_in_total_across_processes(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    # Two web processes of one fleet: separate apps and guards, one Redis and key prefix.
    with LiveServer(bypass_app(make_guard())) as one, LiveServer(bypass_app(make_guard())) as two:
        outcomes = [visit(one if i % 2 else two, f"guess-{i}", "127.0.0.2")[0] for i in range(5)]
        assert outcomes == [404] * 5
        status, headers = visit(one, "guess-5", "127.0.0.2")
        assert status == 429
        assert 1 <= int(headers["retry-after"]) <= 600
        # Past the limit even the right secret is refused: a 429 never tells a guess apart.
        status, headers = visit(two, SECRET, "127.0.0.2")
        assert status == 429 and "set-cookie" not in headers
        # Another address may still try, and the right secret works for it.
        assert visit(two, SECRET, "127.0.0.3")[0] == 302
        # The total limit (12) stops a guesser that spreads over many addresses.
        spread = [visit(one, f"spread-{i}", f"127.0.1.{i}")[0] for i in range(1, 8)]
        assert spread == [404] * 7
        assert visit(two, "one-more", "127.0.2.1")[0] == 429
        assert visit(one, SECRET, "127.0.2.2")[0] == 429


def test_guesses_are_limited_in_memory_when_redis_is_down(
    private_redis: RedisServer, make_guard: Callable[..., MaintenanceGuard]
) -> None:
    guard = make_guard(url=private_redis.url)
    with LiveServer(bypass_app(guard)) as live:
        assert visit(live, "before-outage", "127.0.0.4")[0] == 404
        private_redis.stop()
        outcomes = [visit(live, f"guess-{i}", "127.0.0.4")[0] for i in range(7)]
    # The count held in Redis is out of reach; this process counts from zero in memory.
    assert outcomes == [404] * 5 + [429] * 2


def _cookie_payload(cookie: str) -> dict[str, Any]:
    head = cookie.split(".")[0]
    raw = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
    return json.loads(raw)  # type: ignore[no-any-return]


def test_the_cookie_reveals_no_fingerprint_of_the_secret_and_a_new_secret_revokes_it(
    guard: MaintenanceGuard,
) -> None:
    guard.enable("normal", reason="db")
    app = bypass_app(guard)
    with LiveServer(app) as live:
        status, headers = visit(live, SECRET)
        assert status == 302
        cookie = headers["set-cookie"].split(";")[0].split("=", 1)[1]
        payload = _cookie_payload(cookie)
        plain = hashlib.sha256(b"maintenance-guard-bypass:" + SECRET.encode()).hexdigest()
        for value in payload.values():
            assert plain[:16] not in str(value)
            assert hashlib.sha256(SECRET.encode()).hexdigest()[:16] not in str(value)
        # The same secret under another SECRET_KEY gives another payload: it is keyed.
        other = bypass_app(guard)
        other.config["SECRET_KEY"] = "another-app-key-" + "y" * 32
        with LiveServer(other) as second:
            other_cookie = visit(second, SECRET)[1]["set-cookie"].split(";")[0].split("=", 1)[1]
        assert _cookie_payload(other_cookie) != payload
        # The cookie lets its browser through a blocked route...
        conn = httpclient.HTTPConnection("127.0.0.1", live.port, timeout=10)
        conn.request("POST", "/upload", headers={"Cookie": f"{BYPASS_COOKIE}={cookie}"})
        assert conn.getresponse().status == 200
        conn.close()
    # ...until the bypass secret changes.
    app.config["MAINTENANCE_GUARD_BYPASS_SECRET"] = "a-new-secret-9876543210"
    from maintenance_guard.flask import get_extension

    get_extension(app).config["BYPASS_SECRET"] = "a-new-secret-9876543210"
    with LiveServer(app) as live:
        conn = httpclient.HTTPConnection("127.0.0.1", live.port, timeout=10)
        conn.request("POST", "/upload", headers={"Cookie": f"{BYPASS_COOKIE}={cookie}"})
        assert conn.getresponse().status == 503
        conn.close()


@pytest.fixture(autouse=True)
def _no_leftover_counters(redis_client: redis.Redis, key_prefix: str) -> None:
    # The counters live under the test's key prefix, which conftest deletes afterwards.
    assert not list(redis_client.scan_iter(match=f"{{{key_prefix}}}:bypass_failures*"))
