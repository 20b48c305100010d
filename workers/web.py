"""The example Flask app, wired to the same guard as the Celery workers.

One endpoint per kind of work submits a Celery task from `workers.tasks`; a toy login
(any name, no password: a demo, not an authentication scheme) makes the user "admin" an
administrator. Run it with ``maintenance-guard demo`` or ``flask --app workers.web run``.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from flask import Flask, jsonify, redirect, render_template_string, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from maintenance_guard import MaintenanceActive, MaintenanceMode
from maintenance_guard.flask import FlaskMaintenance, get_extension, maintenance_operation

from . import app as celery_app
from . import guard, tasks

ADMIN_USER = "admin"

# Flask endpoints -> operations (fnmatch globs on endpoint names and URL rules).
ENDPOINT_OPERATIONS = {
    "create_job": "job_creation",
    "/api/platforms/*": "platform_operations",
    "run_batch": "batch_operations",
    "update_profile": "user_data_modification",
}

HOME = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>maintenance-guard demo</title>
<link rel="stylesheet" href="{{ url_for('maintenance_guard.static', filename='maintenance.css') }}">
</head><body><main class="mg-page">
<h1>maintenance-guard demo</h1>
<p>Signed in as: <strong>{{ user or 'nobody' }}</strong>
{% if admin %}(administrator){% endif %}</p>
<form method="post" action="{{ url_for('login') }}">
  <label>Name <input name="user" value="{{ 'admin' if not user else user }}"></label>
  <button type="submit">Sign in</button> <a href="{{ url_for('logout') }}">Sign out</a>
</form>
<ul>
  <li><a href="{{ url_for('maintenance_guard.status_page') }}">Status page</a></li>
  <li><a href="{{ url_for('maintenance_guard.admin_dashboard') }}">Admin dashboard</a>
      (sign in as "admin")</li>
  <li><a href="{{ url_for('list_items') }}">GET /api/items</a> (a read)</li>
</ul>
<h2>Submit work</h2>
{% for label, endpoint in forms %}
<form method="post" action="{{ url_for(endpoint) }}" class="mg-inline">
  <button type="submit">{{ label }}</button></form>
{% endfor %}
</main></body></html>
"""


LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in</title></head><body>
<form method="post" action="{{ url_for('login') }}">
  <label>Name <input name="user" value="admin"></label> <button type="submit">Sign in</button>
</form></body></html>
"""


def _submit(task: Any, *args: Any, **kwargs: Any) -> Any:
    """Submit a task; a refused submission becomes the extension's 503 answer."""
    try:
        result = task.delay(*args, **kwargs)
    except MaintenanceActive as refused:
        return get_extension().blocked_response(refused)
    return jsonify({"task_id": result.id, "task": task.name}), 202


def create_app() -> Flask:
    """The demo web app (``SECRET_KEY`` from ``$WORKERS_WEB_SECRET_KEY`` or random)."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = os.environ.get("WORKERS_WEB_SECRET_KEY") or secrets.token_hex(32)
    # The sign-in routes stay reachable in an emergency so an admin can sign in;
    # `login` itself refuses everyone else then.
    app.config["MAINTENANCE_GUARD_EXEMPT_ENDPOINTS"] = ["static", "login*", "logout"]
    bypass = os.environ.get("WORKERS_WEB_BYPASS_SECRET")
    if bypass:
        app.config["MAINTENANCE_GUARD_BYPASS_SECRET"] = bypass
    for pattern, operation in ENDPOINT_OPERATIONS.items():
        if pattern not in dict(guard.endpoint_operations.patterns):
            guard.endpoint_operations.add(pattern, operation)
    FlaskMaintenance(
        app,
        guard,
        is_admin=lambda: session.get("user") == ADMIN_USER,
        user_name=lambda: session.get("user"),
    )

    @app.get("/")
    def home() -> str:
        user = session.get("user")
        forms = [
            ("Generate a caption", "generate_caption"),
            ("Process an image", "process_image"),
            ("Create a job", "create_job"),
            ("Sync a platform", "sync_platform"),
            ("Run a batch", "run_batch"),
            ("Update my profile", "update_profile"),
        ]
        return render_template_string(HOME, user=user, admin=user == ADMIN_USER, forms=forms)

    @app.get("/login")
    def login_form() -> str:
        return render_template_string(LOGIN)

    @app.post("/login")
    def login() -> BaseResponse:
        user = str((request.get_json(silent=True) or request.form).get("user", "")).strip()[:50]
        if user != ADMIN_USER and guard.current().mode is MaintenanceMode.EMERGENCY:
            try:
                guard.check(None, surface="login", target="login", user=user or None)
            except MaintenanceActive as refused:
                return get_extension().blocked_response(refused)
        session.clear()
        if user:
            session["user"] = user
        if request.is_json:
            return jsonify({"user": user or None})
        return redirect(url_for("home"))

    @app.get("/logout")
    def logout() -> BaseResponse:
        session.clear()
        return redirect(url_for("home"))

    @app.post("/api/captions")
    @maintenance_operation("caption_generation")
    def generate_caption() -> Any:
        return _submit(tasks.generate_caption, post_id=secrets.randbelow(10_000))

    @app.post("/api/images")
    @maintenance_operation("image_processing")
    def process_image() -> Any:
        return _submit(tasks.process_image, image_id=secrets.randbelow(10_000))

    @app.post("/api/jobs")
    def create_job() -> Any:
        return _submit(tasks.create_job, {"name": "demo"})

    @app.post("/api/platforms/sync")
    def sync_platform() -> Any:
        return _submit(tasks.sync_platform, "example")

    @app.post("/api/batches")
    def run_batch() -> Any:
        return _submit(tasks.run_batch, list(range(5)))

    @app.post("/api/profile")
    def update_profile() -> Any:
        return _submit(tasks.update_user_profile, 1, {"bio": "hello"})

    @app.get("/api/items")
    def list_items() -> Any:
        return jsonify({"items": [{"id": i, "name": f"item {i}"} for i in range(1, 4)]})

    @app.get("/api/tasks/<task_id>")
    def task_state(task_id: str) -> Any:
        result = celery_app.AsyncResult(task_id[:100])
        return jsonify({"task_id": result.id, "state": result.state})

    return app


app = create_app()
