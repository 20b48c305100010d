"""User impact per maintenance window on real processes: refusals over real HTTP (two
users, and one with no name) and from a Celery publish, a job a real worker finishes,
two windows kept apart in Redis, the admin overview over HTTP, `maintenance-guard
report`, and Flask-Session sessions counted by role."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
import redis
import requests
from celery import Celery

from maintenance_guard import MaintenanceActive, MaintenanceGuard, WindowImpact, read_impact
from maintenance_guard.tally import IMPACT_RETENTION
from tests.e2e.flask_support import LiveServer, build_app, make_guard_for_app
from tests.helpers import free_port, wait_for
from tests.integration import celery_support
from tests.integration.celery_support import ROOT, Broker, StartWorker, make_app, new_queue

redis_broker = celery_support.redis_broker
start_worker = celery_support.start_worker


@pytest.fixture
def app_guard(make_guard: Callable[..., MaintenanceGuard]) -> MaintenanceGuard:
    return make_guard_for_app(make_guard)


@pytest.fixture
def web(app_guard: MaintenanceGuard) -> Iterator[LiveServer]:
    with LiveServer(build_app(app_guard)) as live:
        yield live


@pytest.fixture
def producer(
    redis_broker: Broker, app_guard: MaintenanceGuard, key_prefix: str
) -> Iterator[tuple[Celery, str]]:
    queue = new_queue(redis_broker)
    app = make_app(
        broker=redis_broker.url,
        redis_url=redis_broker.redis_url,
        prefix=key_prefix,
        queue=queue,
        guard=app_guard,
    )
    yield app, queue
    celery_support.uninstall(app)


def signed_in(base: str, user: str | None) -> requests.Session:
    http = requests.Session()
    if user is not None:
        assert http.get(f"{base}/login/{user}", timeout=5).status_code == 200
    return http


def refuse(http: requests.Session, base: str, times: int = 1) -> None:
    for _ in range(times):
        assert http.post(f"{base}/api/jobs", timeout=5).status_code == 503


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maintenance_guard.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_each_window_keeps_its_own_impact_and_a_new_window_starts_at_zero(
    web: LiveServer,
    producer: tuple[Celery, str],
    redis_broker: Broker,
    start_worker: StartWorker,
    app_guard: MaintenanceGuard,
    make_guard: Callable[..., MaintenanceGuard],
    redis_client: redis.Redis,
    key_prefix: str,
    cli_env: dict[str, str],
) -> None:
    guard = app_guard
    app, queue = producer
    start_worker(redis_broker, queue)
    base = web.url
    alice, bob, nobody = signed_in(base, "alice"), signed_in(base, "bob"), signed_in(base, None)
    admin = signed_in(base, "admin")

    guard.enable("normal", reason="first upgrade", by="ops")
    first = guard.current()
    refuse(alice, base, 2)
    refuse(bob, base)
    refuse(nobody, base)
    with pytest.raises(MaintenanceActive):
        app.tasks["mgtest.caption"].delay("refused at publish")
    # A job that runs (read is not blocked) and finishes in a worker's pool process,
    # once the worker and its two pool processes know the window.
    wait_for(lambda: len(processes_seeing(guard)) >= 3, 30)
    app.tasks["mgtest.read"].delay("during the window")
    wait_for(lambda: (i := guard.impact()) is not None and i.jobs_finished_total >= 1, 30)
    # An admin's request is not a refusal and counts nowhere.
    assert admin.post(f"{base}/api/jobs", timeout=5).status_code == 201

    impact = guard.impact()
    assert isinstance(impact, WindowImpact) and impact.active
    assert impact.opened_at == first.opened_at == first.started_at
    assert impact.refused == {"job_creation": {"http": 4}, "caption_generation": {"publish": 1}}
    assert impact.distinct_users == 2  # alice and bob (HyperLogLog: exact at this size)
    assert impact.refused_without_user == 2  # the anonymous request and the publish
    assert sum(impact.per_minute.values()) == 5
    assert impact.jobs_finished == {"read": 1}
    assert impact.sessions is None  # this app keeps no Flask-Session on Redis

    # An update and a mode change keep the window; started_at moves, opened_at does not.
    guard.enable("emergency", reason="worse than planned", by="ops")
    assert guard.current().opened_at == first.opened_at
    assert guard.current().started_at != first.started_at
    refuse(bob, base)
    guard.disable(by="ops")
    ended = guard.impact()
    assert ended is not None and not ended.active and ended.window == impact.window
    assert ended.refused_total == 6 and ended.modes == ("emergency", "normal")
    assert ended.ended_at is not None and ended.ended_at >= ended.opened_at  # type: ignore[operator]

    guard.enable("normal", reason="second upgrade", by="ops")
    second = guard.impact()
    assert second is not None and second.active and second.window != ended.window
    assert (second.refused, second.distinct_users, second.refused_without_user) == ({}, 0, 0)
    assert second.jobs_finished == {} and sum(second.per_minute.values()) == 0
    carol = signed_in(base, "carol")
    refuse(carol, base)

    # Another process reads both windows apart: the first one unchanged.
    reader = make_guard()
    again = read_impact(reader.store, ended.window)
    assert again is not None and again.refused_total == 6 and again.distinct_users == 2
    assert again.jobs_finished_total == 1 and not again.active
    # (the web process's watcher writes carol's refusal at its next poll)
    wait_for(lambda: (i := reader.impact()) is not None and i.refused_total == 1, 10)
    now = reader.impact()
    assert now is not None and now.window == second.window
    assert now.refused == {"job_creation": {"http": 1}} and now.distinct_users == 1

    # Every impact key shares the state's hash tag and expires.
    keys = list(redis_client.scan_iter(f"{{{key_prefix}}}:impact:*"))
    assert keys and all(0 < redis_client.ttl(k) <= IMPACT_RETENTION for k in keys)

    # The admin overview over real HTTP: the window under way.
    body = admin.get(f"{base}/api/maintenance/admin/overview", timeout=5).json()
    assert body["impact"]["window"] == second.window and body["impact"]["active"] is True
    assert body["impact"]["refused"] == {"job_creation": {"http": 1}}
    assert body["impact"]["distinct_users"] == 1 and body["impact"]["sessions"] is None
    chart = body["impact"]["attempts_per_minute"]
    assert chart["step_minutes"] == 1 and sum(chart["counts"]) == 1
    assert body["attempts"]["blocked"]["job_creation"]["http"] == 6  # all time, both windows
    assert user_overview_refused(bob, base)

    # `report` prints the last window (text after the emergency report; JSON key).
    guard.disable(by="ops")
    text = cli(cli_env, "report")
    assert text.returncode == 0, text.stderr
    assert "Impact of the last maintenance window (normal)" in text.stdout
    assert "Refused attempts: 1 (job_creation: http=1)" in text.stdout
    assert "Active sessions: unknown" in text.stdout
    as_json = json.loads(cli(cli_env, "report", "--json").stdout)
    assert as_json["impact"]["window"] == second.window and not as_json["impact"]["active"]
    assert as_json["impact"]["refused_total"] == 1 and "timeline" in as_json


def processes_seeing(guard: MaintenanceGuard) -> list[int]:
    """Other processes (a worker and its pool) whose presence shows the current state."""
    version = guard.current().version
    return [
        int(record.get("pid") or 0)
        for record in guard.store.read_presence().values()  # type: ignore[attr-defined]
        if record.get("pid") != os.getpid() and (record.get("version") or 0) >= version
    ]


def user_overview_refused(http: requests.Session, base: str) -> bool:
    return http.get(f"{base}/api/maintenance/admin/overview", timeout=5).status_code == 403


def test_overview_counts_flask_session_sessions_by_role(
    make_guard: Callable[..., MaintenanceGuard], redis_url: str, key_prefix: str
) -> None:
    from flask import Flask, session
    from flask_session import Session
    from werkzeug.serving import make_server

    from maintenance_guard.flask import FlaskMaintenance

    guard = make_guard_for_app(make_guard)  # POST /api/jobs is job_creation
    client = redis.Redis.from_url(redis_url)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test",
        SESSION_TYPE="redis",
        SESSION_REDIS=client,
        SESSION_KEY_PREFIX=f"{{{key_prefix}}}:session:",  # deleted with the test's keys
        MAINTENANCE_GUARD_EXEMPT_ENDPOINTS=("static", "login"),
        MAINTENANCE_GUARD_CSRF=False,
    )
    Session(app)
    FlaskMaintenance(
        app,
        guard,
        is_admin=lambda: bool(session.get("is_admin")),
        user_name=lambda: session.get("user"),
    )

    @app.get("/login/<name>")
    def login(name: str) -> str:
        session["user"] = name
        session["is_admin"] = name == "root"
        return "ok"

    @app.post("/api/jobs")
    def jobs_create() -> tuple[str, int]:
        return "created", 201

    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        users = {name: signed_in(base, name) for name in ("root", "alice", "bob", "dave")}
        guard.enable("normal", reason="sessions", by="ops")
        refuse(users["alice"], base)
        overview = users["root"].get(f"{base}/api/maintenance/admin/overview", timeout=5)
        impact = overview.json()["impact"]
        assert impact["sessions"] == {
            "admin": 1,
            "non_admin": 3,
            "undecodable": 0,
            "truncated": False,
        }
        assert impact["distinct_users"] == 1 and impact["refused_total"] == 1
    finally:
        server.shutdown()
        thread.join(5)
        client.close()
