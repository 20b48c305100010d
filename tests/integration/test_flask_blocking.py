"""Request blocking by the Flask extension (test client on a real Redis)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from maintenance_guard import InvalidInput, MaintenanceActive, MaintenanceGuard, UnknownOperation
from maintenance_guard.flask import (
    BYPASS_COOKIE,
    FlaskMaintenance,
    get_extension,
    maintenance_operation,
)
from tests.e2e.flask_support import build_app, make_guard_for_app
from tests.helpers import wait_for


@pytest.fixture
def guard(make_guard: Callable[..., MaintenanceGuard]) -> MaintenanceGuard:
    return make_guard_for_app(make_guard)


@pytest.fixture
def app(guard: MaintenanceGuard) -> Flask:
    return build_app(guard)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_nothing_is_refused_when_maintenance_is_off(client: FlaskClient) -> None:
    assert client.post("/api/jobs").status_code == 201
    assert client.post("/api/captions").status_code == 200
    assert client.get("/api/items").status_code == 200


def test_blocked_api_request_gets_503_json_with_retry_after_to_the_announced_end(
    client: FlaskClient, guard: MaintenanceGuard
) -> None:
    guard.enable("normal", reason="DB upgrade", duration=120, by="ops")
    response = client.post("/api/jobs")
    assert response.status_code == 503
    assert response.mimetype == "application/json"
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 120
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["error"] == "maintenance_active"
    assert body["operation"] == "job_creation"
    assert body["message"] == "New jobs cannot be started during system maintenance."
    assert "Check the status of your existing jobs" in body["alternatives"]
    assert body["reason"] == "DB upgrade"
    assert body["retry_after"] == retry_after


def test_retry_after_without_duration_is_the_configured_default(
    client: FlaskClient, guard: MaintenanceGuard
) -> None:
    guard.enable("normal", reason="unknown length")
    response = client.post("/api/jobs")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(guard.settings.default_retry_after)


def test_browser_gets_html_503_page_with_message_alternatives_and_escaped_reason(
    client: FlaskClient, guard: MaintenanceGuard
) -> None:
    guard.enable("normal", reason="<script>alert('x')</script> & more", duration=60)
    response = client.post("/upload", headers={"Accept": "text/html,application/xhtml+xml"})
    assert response.status_code == 503
    assert response.mimetype == "text/html"
    assert int(response.headers["Retry-After"]) >= 1
    html = response.get_data(as_text=True)
    assert "Image upload and processing are temporarily unavailable" in html
    assert "Browse images you have already uploaded" in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more" in html
    assert "<script>alert(" not in html


def test_client_asking_for_json_outside_api_gets_json(
    client: FlaskClient, guard: MaintenanceGuard
) -> None:
    guard.enable("normal", reason="r")
    response = client.post("/upload", headers={"Accept": "application/json"})
    assert response.status_code == 503
    assert response.get_json()["operation"] == "image_processing"


def test_decorator_endpoint_pattern_and_url_rule_pattern_each_classify(
    client: FlaskClient, guard: MaintenanceGuard
) -> None:
    guard.enable("normal", reason="r", operations=["caption_generation", "batch_operations"])
    assert client.post("/api/captions").get_json()["operation"] == "caption_generation"
    assert client.post("/api/batches/run").get_json()["operation"] == "batch_operations"
    # job_creation is not in this maintenance's list: allowed.
    assert client.post("/api/jobs").status_code == 201


def test_safe_reads_and_unmapped_writes_stay_open_in_normal_mode(
    client: FlaskClient, guard: MaintenanceGuard
) -> None:
    guard.enable("normal", reason="r")
    assert client.get("/api/items").status_code == 200
    assert client.get("/").status_code == 200
    assert client.post("/notes").status_code == 200


def test_unmapped_write_operation_setting_blocks_unmapped_posts(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    guard = make_guard_for_app(make_guard)
    client = build_app(guard, UNMAPPED_WRITE_OPERATION="user_data_modification").test_client()
    guard.enable("normal", reason="r")
    assert client.post("/notes").status_code == 503
    assert client.get("/api/items").status_code == 200


def test_emergency_refuses_everything_but_the_maintenance_routes(
    client: FlaskClient, guard: MaintenanceGuard
) -> None:
    guard.enable("emergency", reason="incident")
    for path in ("/api/items", "/"):
        assert client.get(path).status_code == 503, path
    assert client.post("/notes").status_code == 503
    assert client.get("/maintenance").status_code == 200
    assert client.get("/api/maintenance/status").get_json()["mode"] == "emergency"
    assert client.get("/api/maintenance/blocked-operations").status_code == 200
    assert client.get("/_maintenance_guard/static/status.js").status_code == 200
    # The configured exemption (the login form) stays reachable so an admin can sign in.
    assert client.post("/login", json={"user": "bob"}).status_code == 200


def test_admin_bypasses_through_is_admin_only(client: FlaskClient, guard: MaintenanceGuard) -> None:
    guard.enable("emergency", reason="incident")
    spoofs: list[dict[str, Any]] = [
        {"headers": {"X-Forwarded-For": "127.0.0.1"}},
        {"headers": {"X-Admin": "true", "X-User": "admin", "X-Real-IP": "127.0.0.1"}},
        {"query_string": {"admin": "1", "is_admin": "true", "bypass": "1"}},
        {"headers": {"Cookie": f"{BYPASS_COOKIE}=anything"}},
    ]
    for spoof in spoofs:
        assert client.post("/api/jobs", **spoof).status_code == 503, spoof
    client.post("/login", json={"user": "admin"})
    assert client.post("/api/jobs").status_code == 201
    assert client.get("/api/items").status_code == 200


def test_non_admin_user_is_refused_and_counted(
    client: FlaskClient, guard: MaintenanceGuard
) -> None:
    client.post("/login", json={"user": "bob"})
    guard.enable("normal", reason="r")
    assert client.post("/api/jobs").status_code == 503
    assert client.post("/api/jobs").status_code == 503
    guard.flush()
    assert guard.store.read_attempt_counts()["blocked:http:job_creation"] == 2


def test_test_mode_blocks_nothing_and_records_would_be_refusals(
    client: FlaskClient, guard: MaintenanceGuard
) -> None:
    guard.enable("test", reason="rehearsal")
    assert client.post("/api/jobs").status_code == 201
    guard.flush()
    assert guard.store.read_attempt_counts().get("would_block:http:job_creation") == 1


def test_state_change_from_another_process_guard_reaches_the_app(
    client: FlaskClient, make_guard: Callable[..., MaintenanceGuard]
) -> None:
    other = make_guard()
    assert client.post("/api/jobs").status_code == 201
    other.enable("normal", reason="from elsewhere")
    wait_for(lambda: client.post("/api/jobs").status_code == 503, timeout=5)
    other.disable()
    wait_for(lambda: client.post("/api/jobs").status_code == 201, timeout=5)


# ----------------------------------------------------------------- bypass cookie


@pytest.fixture
def bypass_app(guard: MaintenanceGuard) -> Flask:
    return build_app(guard, BYPASS_SECRET="let-me-in-0123456789", BYPASS_MAX_AGE=600)


def test_bypass_secret_url_sets_a_cookie_that_lets_the_operator_through(
    bypass_app: Flask, guard: MaintenanceGuard
) -> None:
    client = bypass_app.test_client()
    guard.enable("emergency", reason="incident")
    assert client.get("/api/items").status_code == 503
    response = client.get("/maintenance/bypass/let-me-in-0123456789")
    assert response.status_code == 302
    cookie = response.headers["Set-Cookie"]
    assert BYPASS_COOKIE in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/api/items").status_code == 200
    assert client.post("/api/jobs").status_code == 201


def test_wrong_bypass_secret_is_404_and_sets_nothing(bypass_app: Flask) -> None:
    client = bypass_app.test_client()
    response = client.get("/maintenance/bypass/let-me-in-0123456788")
    assert response.status_code == 404
    assert "Set-Cookie" not in response.headers


def test_bypass_url_is_404_when_no_secret_is_configured(client: FlaskClient) -> None:
    assert client.get("/maintenance/bypass/anything").status_code == 404


def test_forged_expired_and_rotated_bypass_cookies_are_ignored(
    bypass_app: Flask, guard: MaintenanceGuard
) -> None:
    guard.enable("emergency", reason="incident")
    ext = get_extension(bypass_app)
    with bypass_app.test_request_context():
        good = ext.make_bypass_cookie()
    client = bypass_app.test_client()

    forged_key = URLSafeTimedSerializer("not-the-app-key", salt="maintenance-guard-bypass")
    client.set_cookie(BYPASS_COOKIE, forged_key.dumps({"fp": good}))
    assert client.get("/api/items").status_code == 503

    class PastSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 601  # BYPASS_MAX_AGE is 600

    with bypass_app.test_request_context():
        fp = ext._bypass_fingerprint()
    old = URLSafeTimedSerializer(
        bypass_app.config["SECRET_KEY"], salt="maintenance-guard-bypass", signer=PastSigner
    )
    client.set_cookie(BYPASS_COOKIE, old.dumps({"fp": fp}))
    assert client.get("/api/items").status_code == 503

    client.set_cookie(BYPASS_COOKIE, good)
    assert client.get("/api/items").status_code == 200
    ext.config["BYPASS_SECRET"] = "a-new-secret-0123456789"
    assert client.get("/api/items").status_code == 503


# ----------------------------------------------------------------- configuration


def test_guard_is_built_from_the_app_config_when_none_is_passed(
    redis_url: str, key_prefix: str, make_guard: Callable[..., MaintenanceGuard]
) -> None:
    app = Flask(__name__)
    app.config.update(
        MAINTENANCE_GUARD_REDIS_URL=redis_url,
        MAINTENANCE_GUARD_KEY_PREFIX=key_prefix,
        MAINTENANCE_GUARD_POLL_INTERVAL=0.2,
        MAINTENANCE_GUARD_ENDPOINT_OPERATIONS={"sync_*": "platform_operations"},
    )
    ext = FlaskMaintenance(app)

    @app.post("/sync")
    def sync_platform() -> str:
        return "ok"

    try:
        assert ext.active_guard.settings.key_prefix == key_prefix
        make_guard().enable("normal", reason="configured")
        client = app.test_client()
        wait_for(lambda: client.post("/sync").status_code == 503, timeout=5)
        refused = client.post("/sync", headers={"Accept": "application/json"})
        assert refused.get_json()["operation"] == "platform_operations"
    finally:
        ext.active_guard.stop(timeout=2)


def test_maintenance_operation_refuses_a_malformed_name() -> None:
    with pytest.raises(InvalidInput):
        maintenance_operation("Not An Operation")


def test_a_view_declaring_an_unknown_operation_fails_loudly_not_silently_open(
    guard: MaintenanceGuard,
) -> None:
    app = build_app(guard)
    app.testing = True

    @app.post("/mystery")
    @maintenance_operation("teleportation")
    def mystery() -> str:
        return "ok"

    guard.enable("normal", reason="r")
    with pytest.raises(UnknownOperation):
        app.test_client().post("/mystery")


def test_admin_requests_carry_the_bypass_to_submissions_made_inside_the_view(
    guard: MaintenanceGuard,
) -> None:
    app = build_app(guard)
    outcomes: list[str] = []

    @app.get("/api/submit-caption")
    def submit_caption() -> str:
        # what a Celery publish from a view does: the guard's check in the send path
        try:
            guard.check("caption_generation", surface="publish")
        except MaintenanceActive:
            outcomes.append("refused")
            return "refused"
        outcomes.append("sent")
        return "sent"

    guard.enable("normal", reason="DB upgrade")
    client = app.test_client()
    client.get("/login/admin")
    assert client.get("/api/submit-caption").get_data(as_text=True) == "sent"
    anonymous = app.test_client()
    assert anonymous.get("/api/submit-caption").get_data(as_text=True) == "refused"
    assert not MaintenanceGuard.acting_as_admin()  # the scope ended with the request
    assert outcomes == ["sent", "refused"]


def test_admin_bypass_scope_is_local_to_the_block(guard: MaintenanceGuard) -> None:
    guard.enable("normal", reason="DB upgrade")
    with guard.admin_bypass():
        guard.check("job_creation")
        assert not guard.is_blocked("job_creation")
    assert guard.is_blocked("job_creation")
