"""The demo web app: a page per kind of work, each submitting a Celery task.

A browser submits work with ordinary HTML forms (``/work/...``) and sees HTML answers,
including the maintenance refusal page; the same work is under ``/api/...`` as JSON for
curl. A toy sign-in (any name, no password: a demo, not an authentication scheme) makes
the user ``admin`` an administrator. ``flask --app maintenance_guard.demo.web:from_environment``
runs it on the demo's Celery app.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import Any

from celery import Celery
from flask import Flask, jsonify, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from ..errors import MaintenanceActive
from ..flask import FlaskMaintenance, get_extension, maintenance_operation
from ..guard import MaintenanceGuard
from ..modes import MaintenanceMode

ADMIN_USER = "admin"

# URL-rule globs -> operations, for POSTs only ("*" also matches "/": /api/jobs, /work/jobs).
ENDPOINT_OPERATIONS = {
    "POST /*/jobs": "job_creation",
    "POST /*/platforms/*": "platform_operations",
    "POST /*/batches": "batch_operations",
    "POST /*/profile": "user_data_modification",
}

# (slug, label, task attribute, operation the decorator declares or None, arguments)
WORK: list[tuple[str, str, str, str | None, Callable[[], tuple[Any, ...]]]] = [
    ("captions", "Generate a caption", "generate_caption", "caption_generation",
     lambda: (secrets.randbelow(10_000),)),
    ("images", "Process an image", "process_image", "image_processing",
     lambda: (secrets.randbelow(10_000),)),
    ("jobs", "Create a job", "create_job", None, lambda: ({"name": "demo"},)),
    ("platforms/sync", "Sync a platform", "sync_platform", None, lambda: ("example",)),
    ("batches", "Run a batch", "run_batch", None, lambda: (list(range(5)),)),
    ("profile", "Update my profile", "update_user_profile", None,
     lambda: (1, {"bio": "hello"})),
]  # fmt: skip


def _safe_next(target: str | None) -> str | None:
    # Only a local path: never an open redirect to another site.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


def create_app(celery: Celery, guard: MaintenanceGuard, tasks: Any) -> Flask:
    """The demo web app on ``celery``'s tasks (``tasks.<name>``) and ``guard``.

    ``SECRET_KEY`` comes from ``$MAINTENANCE_GUARD_DEMO_SECRET_KEY`` (random if unset), an
    optional bypass secret from ``$MAINTENANCE_GUARD_DEMO_BYPASS_SECRET``.
    """
    app = Flask(__name__)
    app.config["SECRET_KEY"] = os.environ.get("MAINTENANCE_GUARD_DEMO_SECRET_KEY") or (
        secrets.token_hex(32)
    )
    # The sign-in routes stay reachable in an emergency so an admin can sign in;
    # `login` itself refuses everyone else then.
    app.config["MAINTENANCE_GUARD_EXEMPT_ENDPOINTS"] = ["static", "login*", "logout"]
    bypass = os.environ.get("MAINTENANCE_GUARD_DEMO_BYPASS_SECRET")
    if bypass:
        app.config["MAINTENANCE_GUARD_BYPASS_SECRET"] = bypass
    known = dict(guard.endpoint_operations.patterns)
    for pattern, operation in ENDPOINT_OPERATIONS.items():
        if pattern not in known:
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
        forms = [(label, f"/work/{slug}") for slug, label, *_ in WORK]
        return render_template("demo_home.html", user=user, admin=user == ADMIN_USER, forms=forms)

    @app.get("/login")
    def login_form() -> str:
        return render_template("demo_login.html", next=_safe_next(request.args.get("next")))

    @app.post("/login")
    def login() -> BaseResponse:
        data = request.get_json(silent=True) or request.form
        user = str(data.get("user", "")).strip()[:50]
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
        return redirect(_safe_next(data.get("next")) or url_for("home"))

    @app.get("/logout")
    def logout() -> BaseResponse:
        session.clear()
        return redirect(url_for("home"))

    for slug, label, task_name, declared, arguments in WORK:
        _add_work_routes(app, slug, label, getattr(tasks, task_name), declared, arguments)

    @app.get("/api/items")
    def list_items() -> Any:
        return jsonify({"items": [{"id": i, "name": f"item {i}"} for i in range(1, 4)]})

    @app.get("/api/tasks/<task_id>")
    def task_state(task_id: str) -> Any:
        result = celery.AsyncResult(task_id[:100])
        return jsonify({"task_id": result.id, "state": result.state})

    return app


def _add_work_routes(
    app: Flask,
    slug: str,
    label: str,
    task: Any,
    operation: str | None,
    arguments: Callable[[], tuple[Any, ...]],
) -> None:
    # A refused submission raises MaintenanceActive, which the extension answers with the
    # 503 refusal: JSON under /api/, the HTML page for the browser's form post.
    def submit_json() -> Any:
        result = task.delay(*arguments())
        return jsonify({"task_id": result.id, "task": task.name}), 202

    def submit_form() -> Any:
        result = task.delay(*arguments())
        return render_template("demo_submitted.html", label=label, task_id=result.id), 202

    name = slug.replace("/", "_")
    views: list[tuple[str, str, Callable[[], Any]]] = [
        (f"/api/{slug}", f"api_{name}", submit_json),
        (f"/work/{slug}", f"work_{name}", submit_form),
    ]
    for rule, endpoint, view in views:
        if operation is not None:
            view = maintenance_operation(operation)(view)
        app.add_url_rule(rule, endpoint, view, methods=["POST"])


def from_environment() -> Flask:
    """The demo web app on the demo's Celery app (`maintenance_guard.demo.worker`)."""
    # Imported here: building the worker module connects to Redis and the broker.
    from .worker import app as celery
    from .worker import guard, tasks

    return create_app(celery, guard, tasks)
