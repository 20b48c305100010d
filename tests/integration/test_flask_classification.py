"""Method-aware classification, the unmatched-pattern warning and Accept negotiation,
on a real threaded HTTP server."""

from __future__ import annotations

import http.client as httpclient
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Blueprint, Flask, jsonify

from maintenance_guard import MaintenanceGuard
from maintenance_guard.flask import FlaskMaintenance, maintenance_operation
from maintenance_guard.flask.negotiation import prefers_json
from tests.e2e.flask_support import LiveServer, http

PATTERNS = {
    "jobs": "job_creation",  # a view serving GET and POST
    "GET /reports/export*": "batch_operations",  # a GET named explicitly
    "PUT,DELETE /profile": "user_data_modification",
    "create_job": "job_creation",  # endpoint is v2.create_job: matches nothing
    "/api/legacy/*": "platform_operations",  # no such rule
}


def build(guard: MaintenanceGuard) -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "k" * 32
    FlaskMaintenance(app, guard)

    @app.route("/jobs", methods=["GET", "POST"])
    def jobs() -> Any:
        return jsonify({"jobs": []})

    @app.get("/reports/export.csv")
    def export() -> str:
        return "a,b"

    @app.route("/profile", methods=["GET", "PUT", "DELETE", "PATCH"])
    def profile() -> str:
        return "profile"

    @app.route("/captions", methods=["GET", "POST"])
    @maintenance_operation("caption_generation")
    def captions() -> str:
        return "captions"

    @app.route("/images", methods=["GET", "POST"])
    @maintenance_operation("image_processing", methods=["GET", "POST"])
    def images() -> str:
        return "images"

    @app.get("/upload-form")
    @maintenance_operation("image_processing")  # GET-only view: its GET is the operation
    def upload_form() -> str:
        return "form"

    v2 = Blueprint("v2", __name__, url_prefix="/v2")

    @v2.post("/api/jobs")
    def create_job() -> Any:
        return jsonify({"created": True}), 201

    app.register_blueprint(v2)
    return app


@pytest.fixture
def server(make_guard: Callable[..., MaintenanceGuard]) -> Iterator[tuple[LiveServer, Any]]:
    guard = make_guard(endpoint_operations=PATTERNS)
    with LiveServer(build(guard)) as live:
        yield live, guard


def status_of(base: str, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    return http(method, base + path, headers=headers)[0]


def test_reads_of_a_view_mapped_to_a_write_stay_open_and_its_writes_are_refused(
    server: tuple[LiveServer, MaintenanceGuard],
) -> None:
    live, guard = server
    guard.enable("normal", reason="db")
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
    }
    assert status_of(live.url, "GET", "/jobs") == 200
    assert status_of(live.url, "HEAD", "/jobs") == 200
    assert status_of(live.url, "OPTIONS", "/jobs") == 200
    assert status_of(live.url, "OPTIONS", "/jobs", preflight) == 200
    assert status_of(live.url, "POST", "/jobs") == 503
    # The decorator without methods: same rule; with methods: exactly those.
    assert status_of(live.url, "GET", "/captions") == 200
    assert status_of(live.url, "POST", "/captions") == 503
    assert status_of(live.url, "GET", "/images") == 503
    assert status_of(live.url, "HEAD", "/images") == 503  # naming GET covers HEAD
    assert status_of(live.url, "OPTIONS", "/images") == 200
    assert status_of(live.url, "GET", "/upload-form") == 503
    # Patterns naming methods.
    assert status_of(live.url, "GET", "/reports/export.csv") == 503
    assert status_of(live.url, "GET", "/profile") == 200
    assert status_of(live.url, "PATCH", "/profile") == 200  # not named, unmapped write
    assert status_of(live.url, "PUT", "/profile") == 503
    assert status_of(live.url, "DELETE", "/profile") == 503


def test_patterns_matching_no_endpoint_or_rule_are_warned_about_once_at_the_first_request(
    server: tuple[LiveServer, MaintenanceGuard], caplog: pytest.LogCaptureFixture
) -> None:
    live, guard = server
    with caplog.at_level(logging.WARNING, logger="maintenance_guard"):
        for _ in range(3):
            assert status_of(live.url, "GET", "/jobs") == 200
    warned = [r.getMessage() for r in caplog.records if "matches no endpoint" in r.getMessage()]
    assert len(warned) == 2, warned
    assert any("'create_job'" in w for w in warned)
    assert any("'/api/legacy/*'" in w for w in warned)
    # The blueprint's write really passes unrefused: that is what the warning is for.
    guard.enable("normal", reason="db")
    assert status_of(live.url, "POST", "/v2/api/jobs") == 201


@pytest.mark.parametrize(
    ("accept", "wants_json"),
    [
        ("application/json, text/html", True),
        ("application/problem+json", True),
        ("application/vnd.api+json", True),
        ("text/html;q=0.5, application/json;q=0.9", True),
        ("application/json;q=0.4, text/html", False),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
        ("text/html, application/json", False),
        ("*/*", False),
        ("", False),
        ("application/json;q=0, text/html", False),
        ("application/*", True),
        ("image/png", False),
    ],
)
def test_a_refused_request_follows_the_accept_header_with_q_values_and_json_suffixes(
    server: tuple[LiveServer, MaintenanceGuard], accept: str, wants_json: bool
) -> None:
    live, guard = server
    guard.enable("normal", reason="db")
    assert prefers_json(accept) is wants_json
    conn = httpclient.HTTPConnection("127.0.0.1", live.port, timeout=10)
    headers = {"Accept": accept} if accept else {}
    conn.request("POST", "/captions", headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 503
    content_type = response.getheader("Content-Type") or ""
    if wants_json:
        assert content_type.startswith("application/json")
        assert json.loads(body)["operation"] == "caption_generation"
    else:
        assert content_type.startswith("text/html")
