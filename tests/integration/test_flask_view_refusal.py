"""A view that submits a blocked Celery task during maintenance answers the 503 refusal,
not a 500 with a traceback; the app can replace that answer. Real Celery app with the
guard installed, real Redis broker, real HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from flask import Flask, jsonify

from maintenance_guard import MaintenanceActive, MaintenanceGuard
from maintenance_guard.flask import FlaskMaintenance, get_extension
from tests.e2e.flask_support import LiveServer, http
from tests.integration import celery_support
from tests.integration.celery_support import Broker, make_app, new_queue, uninstall

redis_broker = celery_support.redis_broker


@pytest.fixture
def celery_app(
    redis_broker: Broker, redis_url: str, key_prefix: str, guard: MaintenanceGuard
) -> Iterator[tuple[Celery, str]]:
    queue = new_queue(redis_broker)
    app = make_app(
        broker=redis_broker.url, redis_url=redis_url, prefix=key_prefix, queue=queue, guard=guard
    )
    try:
        yield app, queue
    finally:
        uninstall(app)


def web_app(guard: MaintenanceGuard, celery: Celery, *, before: Any = None) -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "k" * 32
    if before is not None:
        before(app)
    FlaskMaintenance(app, guard)

    @app.post("/submit")  # unmapped: the request passes, the task submission is refused
    def submit() -> Any:
        result = celery.tasks["mgtest.caption"].delay("t1")
        return jsonify({"task_id": result.id}), 202

    return app


def test_a_task_refused_inside_a_view_answers_503_json_or_html_with_retry_after(
    celery_app: tuple[Celery, str], guard: MaintenanceGuard, redis_broker: Broker
) -> None:
    celery, queue = celery_app
    guard.enable("normal", reason="DB upgrade", duration=1800)
    with LiveServer(web_app(guard, celery)) as live:
        status, headers, body = http(
            "POST", f"{live.url}/submit", headers={"Accept": "application/json"}
        )
        assert status == 503, body[:300]
        data = json.loads(body)
        assert data["operation"] == "caption_generation" and data["reason"] == "DB upgrade"
        assert 1700 <= int(headers["Retry-After"]) <= 1800
        status, headers, body = http("POST", f"{live.url}/submit", headers={"Accept": "text/html"})
        assert status == 503
        page = body.decode()
        assert "Caption generation is temporarily unavailable" in page
        assert "Traceback" not in page
        assert "try again in about 30 minutes." in re.sub(r"<[^>]+>", "", page)
        assert headers["Content-Type"].startswith("text/html")
    assert redis_broker.queue_length(queue) == 0  # nothing reached the broker


def test_the_app_replaces_the_refusal_with_a_blocked_handler(
    celery_app: tuple[Celery, str], guard: MaintenanceGuard
) -> None:
    celery, _ = celery_app
    app = web_app(guard, celery)
    ext = get_extension(app)
    seen: list[str | None] = []

    @ext.blocked_handler
    def refuse(refused: MaintenanceActive) -> Any:
        seen.append(refused.operation)
        if refused.operation == "job_creation":
            return None  # keep the default answer
        return jsonify({"sorry": refused.message}), 503, {"Retry-After": "42"}

    @app.post("/jobs")
    def jobs() -> str:
        guard.check("job_creation")
        return "created"

    guard.enable("normal", reason="DB upgrade")
    with LiveServer(app) as live:
        status, headers, body = http("POST", f"{live.url}/submit")
        assert status == 503 and headers["Retry-After"] == "42"
        assert "Caption generation" in json.loads(body)["sorry"]
        status, _, body = http("POST", f"{live.url}/jobs", headers={"Accept": "application/json"})
        assert status == 503 and json.loads(body)["operation"] == "job_creation"
    assert seen == ["caption_generation", "job_creation"]


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_errorhandler_the_app_registers_wins_over_the_extension(
    celery_app: tuple[Celery, str],
    make_guard: Callable[..., MaintenanceGuard],
    guard: MaintenanceGuard,
    when: str,
) -> None:
    celery, _ = celery_app

    def handler(exc: MaintenanceActive) -> Any:
        return jsonify({"custom": True, "operation": exc.operation}), 418

    def register(app: Flask) -> None:
        app.register_error_handler(MaintenanceActive, handler)

    app = web_app(guard, celery, before=register if when == "before" else None)
    if when == "after":
        register(app)
    guard.enable("normal", reason="DB upgrade")
    with LiveServer(app) as live:
        status, _, body = http("POST", f"{live.url}/submit")
    assert status == 418
    assert json.loads(body) == {"custom": True, "operation": "caption_generation"}
