"""The Flask extension over real HTTP: threaded werkzeug server and gunicorn (gthread)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie

import pytest

from maintenance_guard import MaintenanceGuard
from tests.e2e.flask_support import (
    SSEReader,
    build_app,
    http,
    live_server,
    make_guard_for_app,
)
from tests.helpers import free_port, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def app_guard(make_guard: Callable[..., MaintenanceGuard]) -> MaintenanceGuard:
    return make_guard_for_app(make_guard)


def _login(base: str, user: str) -> str:
    status, headers, _ = http("POST", f"{base}/login", {"user": user})
    assert status == 200
    cookie = SimpleCookie(headers["Set-Cookie"])
    return f"session={cookie['session'].value}"


def test_blocked_request_over_real_http_gets_503_and_retry_after(
    app_guard: MaintenanceGuard, make_guard: Callable[..., MaintenanceGuard]
) -> None:
    with live_server(build_app(app_guard)) as server:
        status, _, _ = http("POST", f"{server.url}/api/jobs", {})
        assert status == 201
        make_guard().enable("normal", reason="upgrade", duration=90)
        wait_for(lambda: http("POST", f"{server.url}/api/jobs", {})[0] == 503, timeout=5)
        status, headers, body = http("POST", f"{server.url}/api/jobs", {})
        assert status == 503
        assert 1 <= int(headers["Retry-After"]) <= 90
        assert headers["Content-Type"].startswith("application/json")
        status, headers, body = http(
            "POST", f"{server.url}/upload", headers={"Accept": "text/html"}
        )
        assert status == 503 and headers["Content-Type"].startswith("text/html")
        assert b"Image upload and processing are temporarily unavailable" in body


def test_stream_sends_the_state_then_one_event_per_change(
    app_guard: MaintenanceGuard, make_guard: Callable[..., MaintenanceGuard]
) -> None:
    other = make_guard()
    with live_server(build_app(app_guard)) as server:
        reader = SSEReader(f"{server.url}/api/maintenance/stream")
        try:
            assert "200" in reader.status_line
            assert "text/event-stream" in reader.headers
            assert reader.next_event()["is_active"] is False
            other.enable("normal", reason="<b>upgrade</b>", duration=60, by="alice")
            event = reader.next_event()
            assert event["is_active"] is True and event["reason"] == "<b>upgrade</b>"
            assert "enabled_by" not in event  # not an admin's stream
            other.enable("emergency", reason="worse")
            assert reader.next_event()["mode"] == "emergency"
            other.disable()
            assert reader.next_event()["is_active"] is False
        finally:
            reader.close()


def test_admin_stream_carries_the_admin_fields(
    app_guard: MaintenanceGuard, make_guard: Callable[..., MaintenanceGuard]
) -> None:
    with live_server(build_app(app_guard)) as server:
        cookie = _login(server.url, "admin")
        reader = SSEReader(f"{server.url}/api/maintenance/stream", cookie=cookie)
        try:
            reader.next_event()
            make_guard().enable("normal", reason="r", by="alice")
            assert reader.next_event()["enabled_by"] == "alice"
        finally:
            reader.close()


def test_stream_sends_heartbeats_and_frees_its_slot_when_the_client_leaves(
    app_guard: MaintenanceGuard,
) -> None:
    app = build_app(app_guard, SSE_HEARTBEAT=0.2, SSE_MAX_CLIENTS=1)
    ext = app.extensions["maintenance_guard"]
    with live_server(app) as server:
        reader = SSEReader(f"{server.url}/api/maintenance/stream")
        reader.next_event()
        assert reader.next_block() == ": heartbeat"
        status, _, body = http("GET", f"{server.url}/api/maintenance/stream", timeout=5)
        assert status == 429 and b"too_many_streams" in body
        reader.close()
        # The next heartbeat write fails on the closed socket and ends the stream.
        wait_for(lambda: ext.broadcaster.client_count == 0, timeout=10)


@pytest.fixture
def gunicorn_server(cli_env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    env = dict(cli_env, MG_TEST_HEARTBEAT="0.5")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--worker-class",
            "gthread",
            "--workers",
            "2",
            "--threads",
            "8",
            "--bind",
            f"127.0.0.1:{port}",
            "tests.e2e.flask_support:gunicorn_app()",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode()[-2000:] if proc.stderr else "")
            try:
                return http("GET", f"{url}/api/maintenance/status", timeout=1)[0] == 200
            except OSError:
                return False

        wait_for(up, timeout=30, interval=0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_stream_and_blocking_work_under_gunicorn_gthread(
    gunicorn_server: str, make_guard: Callable[..., MaintenanceGuard]
) -> None:
    other = make_guard()
    readers = [SSEReader(f"{gunicorn_server}/api/maintenance/stream") for _ in range(3)]
    try:
        for reader in readers:
            assert reader.next_event()["is_active"] is False
        other.enable("normal", reason="gunicorn check", duration=300)
        for reader in readers:
            assert reader.next_event()["reason"] == "gunicorn check"
        # Every worker process refuses, whichever one answers.
        wait_for(
            lambda: all(
                http("POST", f"{gunicorn_server}/api/jobs", {})[0] == 503 for _ in range(6)
            ),
            timeout=5,
        )
        other.disable()
        for reader in readers:
            assert reader.next_event()["is_active"] is False
    finally:
        for reader in readers:
            reader.close()
