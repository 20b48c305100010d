"""The admin check and the user name set by decorator after construction
(``@ext.admin_loader``, ``@ext.user_name_loader``), over real HTTP."""

from __future__ import annotations

import json
from http.cookies import SimpleCookie
from typing import Any

from flask import Flask, jsonify, request, session

from maintenance_guard import MaintenanceGuard
from maintenance_guard.flask import FlaskMaintenance, maintenance_operation
from tests.e2e.flask_support import http, live_server
from tests.helpers import wait_for

API = "/api/maintenance"


def loader_app(guard: MaintenanceGuard, after_teardown: list[bool]) -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "loader-test-key-" + "x" * 32
    app.config["MAINTENANCE_GUARD_EXEMPT_ENDPOINTS"] = ["static", "login"]

    # Registered before the extension's teardown, so it runs after it.
    @app.teardown_request
    def record_scope(_exc: BaseException | None) -> None:
        after_teardown.append(MaintenanceGuard.acting_as_admin())

    # The constructor's check says nobody is an admin; the decorator replaces it.
    ext = FlaskMaintenance(app, guard, is_admin=lambda: False)

    @ext.admin_loader
    def is_admin() -> bool:
        return session.get("user") == "alice"

    @ext.user_name_loader
    def user_name() -> str | None:
        return session.get("user")

    @app.post("/login")
    def login() -> Any:
        session["user"] = str((request.get_json(silent=True) or {}).get("user", ""))
        return jsonify({"user": session["user"]})

    @app.post("/upload")
    @maintenance_operation("image_processing")
    def upload() -> Any:
        return jsonify({"acting_as_admin": MaintenanceGuard.acting_as_admin()})

    return app


def _login(base: str, user: str) -> str:
    status, headers, _ = http("POST", f"{base}/login", {"user": user})
    assert status == 200
    return _session(headers)


def _session(headers: dict[str, str]) -> str:
    return f"session={SimpleCookie(headers['Set-Cookie'])['session'].value}"


def test_decorated_loaders_make_the_admin_and_name_them_and_the_admin_scope_ends_with_the_request(
    guard: MaintenanceGuard,
) -> None:
    after_teardown: list[bool] = []
    with live_server(loader_app(guard, after_teardown)) as server:
        alice = _login(server.url, "alice")
        bob = _login(server.url, "bob")

        # bob is no admin: the admin API refuses him.
        status, _, _ = http("GET", f"{server.url}{API}/csrf-token", headers={"Cookie": bob})
        assert status == 403

        # alice is, by the decorated loader; the user-name loader names her in the state.
        status, headers, body = http(
            "GET", f"{server.url}{API}/csrf-token", headers={"Cookie": alice}
        )
        assert status == 200, body[:300]
        token = json.loads(body)["csrf_token"]
        alice = _session(headers)  # the session now holds the token
        status, _, body = http(
            "POST",
            f"{server.url}{API}/enable",
            {"mode": "normal", "reason": "upgrade", "duration": 600},
            headers={"Cookie": alice, "X-CSRF-Token": token},
        )
        assert status == 200, body[:300]
        assert json.loads(body)["enabled_by"] == "alice"
        wait_for(lambda: guard.current().is_active, timeout=5)

        status, _, _ = http("POST", f"{server.url}/upload", {}, headers={"Cookie": bob})
        assert status == 503
        status, _, _ = http("POST", f"{server.url}/upload", {})
        assert status == 503

        after_teardown.clear()
        status, _, body = http("POST", f"{server.url}/upload", {}, headers={"Cookie": alice})
        assert status == 200, body[:300]
        # Inside alice's view every check passes as an admin's (tasks she submits too)...
        assert json.loads(body) == {"acting_as_admin": True}
        # ...and the scope is closed when her request ends.
        wait_for(lambda: after_teardown, timeout=5)
        assert after_teardown == [False]
