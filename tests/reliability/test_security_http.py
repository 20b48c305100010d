"""Attacks on the Flask integration over real HTTP (a live threaded server, raw sockets).

Complements the Flask helper's in-process tests (``tests/integration/test_flask_*.py``,
schemathesis in ``test_flask_openapi.py``) with what only the wire shows: headers and
paths a proxy or client can forge, chunked bodies without a length, cross-site posts.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from maintenance_guard import MaintenanceGuard
from maintenance_guard.deferred import DeferredQueue, new_entry
from maintenance_guard.flask import BYPASS_COOKIE, get_extension
from maintenance_guard.inflight import InflightJob, InflightRegistry
from tests.e2e.flask_support import LiveServer, SSEReader, build_app, make_guard_for_app
from tests.reliability.web import Browser

BYPASS_SECRET = "let-me-in-0123456789"
XSS_REASON = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2"> "q" & \'a\''
ADMIN_NAME = "alice-operator-7731"
SECRET_ARG = "SECRET-ARG-4242"


@pytest.fixture
def app_guard(make_guard: Callable[..., MaintenanceGuard]) -> MaintenanceGuard:
    return make_guard_for_app(make_guard)


@pytest.fixture
def app(app_guard: MaintenanceGuard) -> Flask:
    return build_app(app_guard, BYPASS_SECRET=BYPASS_SECRET, BYPASS_MAX_AGE=600)


@pytest.fixture
def server(app: Flask) -> Iterator[LiveServer]:
    with LiveServer(app) as live:
        yield live


def raw_request(port: int, data: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send bytes exactly as given (no client normalisation); status and whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            answer += chunk
            head, sep, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if sep and length and len(body) >= int(length.group(1)):
                break  # the whole answer is in, whether or not the server closes
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    assert match, answer[:200]
    return int(match.group(1)), answer


def stored(client: redis.Redis, guard: MaintenanceGuard) -> tuple[dict[str, str], int]:
    store: Any = guard.store
    return client.hgetall(store.state_key), int(client.xlen(store.events_key))


def cookie_header(browser: Browser) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in browser.jar)


# ------------------------------------------------------------------ no bypass


def test_forged_headers_query_parameters_cookies_and_paths_never_bypass_over_http(
    app: Flask, server: LiveServer, app_guard: MaintenanceGuard
) -> None:
    app_guard.enable("emergency", reason="incident", by=ADMIN_NAME)
    ext = get_extension(app)
    with app.test_request_context():
        fingerprint = ext._bypass_fingerprint()

    class PastSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 601  # BYPASS_MAX_AGE is 600

    key = str(app.config["SECRET_KEY"])
    salt = "maintenance-guard-bypass"
    forged_bypass = URLSafeTimedSerializer("not-the-app-key", salt=salt).dumps({"fp": fingerprint})
    expired_bypass = URLSafeTimedSerializer(key, salt=salt, signer=PastSigner).dumps(
        {"fp": fingerprint}
    )
    wrong_fp_bypass = URLSafeTimedSerializer(key, salt=salt).dumps({"fp": "0" * 32})
    other_app = Flask("attacker")
    other_app.secret_key = "attacker-key"
    forged_session = SecureCookieSessionInterface().get_signing_serializer(other_app)
    assert forged_session is not None
    forged_admin_session = forged_session.dumps({"user": "admin"})

    anonymous = Browser(server.url)
    spoofs: list[dict[str, Any]] = [
        {"headers": {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"}},
        {"headers": {"Forwarded": "for=127.0.0.1;proto=https;by=127.0.0.1"}},
        {"headers": {"X-Admin": "true", "X-Is-Admin": "1", "X-Role": "admin"}},
        {"headers": {"X-User": "admin", "X-Remote-User": "admin", "X-Forwarded-User": "admin"}},
        {"headers": {"Remote-User": "admin", "Authorization": "Basic YWRtaW46YWRtaW4="}},
        {"headers": {"X-Maintenance-Bypass": BYPASS_SECRET, "X-Bypass": BYPASS_SECRET}},
        {"headers": {"X-Original-URL": "/api/maintenance/status"}},
        {"headers": {"X-Rewrite-URL": "/api/maintenance/status"}},
        {"headers": {"X-HTTP-Method-Override": "GET", "X-Method-Override": "GET"}},
        {"query": f"?admin=1&is_admin=true&user=admin&bypass={BYPASS_SECRET}"},
        {"query": f"?maintenance_bypass={BYPASS_SECRET}&{BYPASS_COOKIE}={BYPASS_SECRET}"},
        {"headers": {"Cookie": f"{BYPASS_COOKIE}=garbage"}},
        {"headers": {"Cookie": f"{BYPASS_COOKIE}={forged_bypass}"}},
        {"headers": {"Cookie": f"{BYPASS_COOKIE}={expired_bypass}"}},
        {"headers": {"Cookie": f"{BYPASS_COOKIE}={wrong_fp_bypass}"}},
        {"headers": {"Cookie": f"session={forged_admin_session}"}},
    ]
    for spoof in spoofs:
        path = "/api/jobs" + spoof.get("query", "")
        code, _, body = anonymous.post(path, {"name": "x"}, headers=spoof.get("headers"))
        assert code == 503, (spoof, code, body[:200])
        code, _, _ = anonymous.get(
            "/api/items" + spoof.get("query", ""), headers=spoof.get("headers")
        )
        assert code == 503, spoof

    # Paths sent byte for byte, as a client that does not normalise them would.
    host = f"Host: 127.0.0.1:{server.port}\r\n"
    for target in [
        "/api/jobs/",
        "//api/jobs",
        "/api/maintenance/../jobs",
        "/api/maintenance/status/../../jobs",
        "/api/jobs;/api/maintenance/status",
        "/api/jobs?x=/api/maintenance/status",
        "/api/jobs#/api/maintenance/status",
        "/API/jobs",
        "/api/%6aobs",
        "/static/../api/jobs",
        "http://127.0.0.1/api/jobs",
    ]:
        request = (
            f"POST {target} HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
            "Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        ).encode()
        code, answer = raw_request(server.port, request)
        assert code != 201 and b"created" not in answer, (target, code, answer[:300])
    for method in ("PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"):
        request = f"{method} /api/jobs HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode()
        code, answer = raw_request(server.port, request)
        assert code in (405, 503), (method, code)

    # Positive controls: the application's admin, and the real bypass URL, do pass.
    operator = Browser(server.url)
    assert operator.get(f"/maintenance/bypass/{BYPASS_SECRET}")[0] in (200, 302)
    assert operator.post("/api/jobs", {"name": "x"})[0] == 201
    admin = Browser(server.url)
    admin.login("admin")
    assert admin.post("/api/jobs", {"name": "x"})[0] == 201


# ------------------------------------------------------------------ CSRF and origin


def test_admin_posts_without_csrf_token_or_from_another_origin_are_refused_over_http(
    server: LiveServer, app_guard: MaintenanceGuard, redis_client: redis.Redis
) -> None:
    app_guard.enable("test", reason="baseline", by=ADMIN_NAME)
    admin = Browser(server.url)
    token = admin.login_admin()
    other_admin = Browser(server.url)
    other_token = other_admin.login_admin()
    assert other_token != token
    user = Browser(server.url)
    user.login("bob")
    code, _, body = user.get("/api/maintenance/csrf-token")
    user_token = json.loads(body).get("csrf_token") if code == 200 else "none"

    before = stored(redis_client, app_guard)
    body = {"mode": "emergency", "reason": "cross-site"}
    path = "/api/maintenance/enable"
    attempts: list[tuple[Browser, dict[str, str]]] = [
        (admin, {}),
        (admin, {"X-CSRF-Token": "x" * 43}),
        (admin, {"X-CSRF-Token": other_token}),
        (admin, {"X-CSRF-Token": token, "Origin": "http://evil.example"}),
        (admin, {"X-CSRF-Token": token, "Origin": f"http://127.0.0.1:{server.port}.evil"}),
        (admin, {"X-CSRF-Token": token, "Origin": "null"}),
        (admin, {"X-CSRF-Token": token, "Referer": "http://evil.example/page"}),
        (user, {"X-CSRF-Token": str(user_token)}),
    ]
    for who, headers in attempts:
        code, _, answer = who.post(path, body, headers=headers)
        assert code == 403, (headers, code, answer)
        assert json.loads(answer)["error"] in ("csrf_failed", "forbidden", "not_admin"), answer
    # A form post (what a cross-site page can send without JavaScript) is refused too.
    code, _, _ = admin.post(
        path,
        raw=b"mode=emergency&reason=cross-site",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": "http://evil.example",
        },
    )
    assert code == 403
    code, _, _ = admin.post(
        path,
        raw=json.dumps(body).encode(),
        headers={"Content-Type": "text/plain", "X-CSRF-Token": token},
    )
    assert code == 415
    assert stored(redis_client, app_guard) == before

    # The genuine admin request, same origin, with its token, works.
    code, _, _ = admin.post(path, body, headers={"X-CSRF-Token": token, "Origin": server.url})
    assert code == 200
    assert app_guard.status().mode is not None and app_guard.status().reason == "cross-site"


# ------------------------------------------------------------------ bad bodies


def test_oversized_malformed_and_wrongly_typed_bodies_get_413_400_415_and_change_nothing(
    server: LiveServer, app_guard: MaintenanceGuard, redis_client: redis.Redis
) -> None:
    app_guard.enable("test", reason="baseline", by=ADMIN_NAME)
    admin = Browser(server.url)
    token = admin.login_admin()
    before = stored(redis_client, app_guard)
    path = "/api/maintenance/enable"
    big = json.dumps({"mode": "normal", "reason": "x" * 100_000}).encode()
    cases: list[tuple[bytes, str, int]] = [
        (big, "application/json", 413),
        (b"{not json", "application/json", 400),
        (b'{"mode": "normal", "reason": "x"', "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b"[" * 100_00 + b"]" * 100_00, "application/json", 400),
        (b'{"mode": "normal", "reason": "x", "duration": 1e999}', "application/json", 400),
        (
            b'{"mode": "normal", "reason": "x", "duration": ' + b"9" * 400 + b"}",
            "application/json",
            400,
        ),
        (b'{"mode": "normal", "reason": "x", "evil": 1}', "application/json", 400),
        (b'{"mode": "normal", "reason": "\\ud800"}', "application/json", 400),
        (b"\xff\xfe\x00garbage", "application/json", 400),
        (b'{"mode": "normal", "reason": "x"}', "text/plain", 415),
        (b"mode=normal&reason=x", "application/x-www-form-urlencoded", 415),
        (b'{"mode": "normal", "reason": "x"}', "application/xml", 415),
    ]
    for raw, content_type, expected in cases:
        code, headers, answer = admin.post(
            path, raw=raw, headers={"Content-Type": content_type, "X-CSRF-Token": token}
        )
        assert code == expected, (raw[:60], content_type, code, answer[:300])
        assert headers.get("Content-Type", "").startswith("application/json"), headers
        assert "error" in json.loads(answer)

    assert stored(redis_client, app_guard) == before


def test_chunked_body_over_the_limit_gets_413_and_is_not_read_whole(
    server: LiveServer, app_guard: MaintenanceGuard, redis_client: redis.Redis
) -> None:
    """A chunked body has no Content-Length: the limit must hold while it is read."""
    app_guard.enable("test", reason="baseline", by=ADMIN_NAME)
    admin = Browser(server.url)
    token = admin.login_admin()
    before = stored(redis_client, app_guard)
    path = "/api/maintenance/enable"
    session_cookie = cookie_header(admin)
    chunk = b"x" * 8192
    pieces = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        f"X-CSRF-Token: {token}\r\nCookie: {session_cookie}\r\nConnection: close\r\n\r\n"
    ).encode() + pieces
    code, answer = raw_request(server.port, request)
    assert code == 413, answer[:300]
    assert stored(redis_client, app_guard) == before


# ------------------------------------------------------------------ escaping


def test_a_reason_with_script_is_escaped_on_every_page_and_intact_in_json_and_the_stream(
    server: LiveServer, app_guard: MaintenanceGuard
) -> None:
    admin = Browser(server.url)
    token = admin.login_admin()
    user = Browser(server.url)
    user.login("bob")
    stream = SSEReader(server.url + "/api/maintenance/stream")
    try:
        assert stream.next_event()["is_active"] is False
        code, _, _ = admin.post(
            "/api/maintenance/enable",
            {"mode": "normal", "reason": XSS_REASON, "duration": 600},
            headers={"X-CSRF-Token": token},
        )
        assert code == 200
        event = stream.next_event()
    finally:
        stream.close()
    assert event["reason"] == XSS_REASON  # the stream carries data (JSON), not markup
    assert "text/event-stream" in stream.headers

    pages = [
        (user, "GET", "/maintenance", None),
        (admin, "GET", "/admin/maintenance", None),
        (user, "POST", "/upload", None),  # the 503 page of a blocked form post
    ]
    for who, method, path, headers in pages:
        code, hdrs, body = who.request(method, path, headers=headers)
        html = body.decode()
        assert hdrs.get("Content-Type", "").startswith("text/html"), (path, hdrs)
        assert "<script>window.__xss" not in html, path
        assert "<img src=x" not in html and 'onerror="window' not in html, path
        assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html, path
    for who, path in [(user, "/api/maintenance/status"), (admin, "/api/maintenance/status")]:
        code, hdrs, body = who.get(path)
        assert hdrs["Content-Type"].startswith("application/json")
        assert json.loads(body)["reason"] == XSS_REASON


# ------------------------------------------------------------------ what non-admins see


def test_non_admins_never_see_job_arguments_or_admin_names_through_the_api_or_the_stream(
    server: LiveServer, app_guard: MaintenanceGuard
) -> None:
    store: Any = app_guard.store
    registry = InflightRegistry(store)
    registry.start(
        InflightJob(
            id="job-1",
            name="tasks.generate_caption",
            operation="caption_generation",
            worker=f"worker@{ADMIN_NAME}-host",
            pid=1,
            started_at=time.time(),
        ),
        now=time.time(),
    )
    DeferredQueue(store, "testq").park(
        new_entry(
            entry_id="deferred-1",
            kind="call",
            task="tasks.generate_caption",
            operation="caption_generation",
            source="publish",
            reason="db",
            payload={"args": json.dumps([SECRET_ARG]), "kwargs": "{}", "options": "{}"},
        )
    )
    app_guard.enable("normal", reason="db upgrade", duration=600, by=ADMIN_NAME)

    anonymous = Browser(server.url)
    user = Browser(server.url)
    user.login("bob")
    seen: list[str] = []
    for who in (anonymous, user):
        for path in [
            "/api/maintenance/status",
            "/api/maintenance/blocked-operations",
            "/api/maintenance/message/caption_generation",
            "/api/maintenance/admin/overview",
            "/api/maintenance/openapi.json",
            "/maintenance",
            "/admin/maintenance",
        ]:
            code, _, body = who.get(path)
            assert code < 500, (path, code)
            seen.append(body.decode(errors="replace"))
        for path in ["/api/jobs", "/upload"]:
            seen.append(who.post(path, {"x": 1})[2].decode(errors="replace"))
        stream = SSEReader(server.url + "/api/maintenance/stream", cookie=cookie_header(who))
        try:
            seen.append(json.dumps(stream.next_event()))
        finally:
            stream.close()
    for text in seen:
        assert ADMIN_NAME not in text
        assert SECRET_ARG not in text
    assert user.get("/api/maintenance/admin/overview")[0] == 403
    assert user.get("/admin/maintenance")[0] in (302, 401, 403)

    # Positive control: the admin does see who switched (so the check above is meaningful).
    admin = Browser(server.url)
    admin.login_admin()
    code, _, body = admin.get("/api/maintenance/status")
    assert json.loads(body)["enabled_by"] == ADMIN_NAME
