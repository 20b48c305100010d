"""The maintenance blueprint: the status page, the admin dashboard and the bypass cookie URL."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, abort, jsonify, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from .errors import InvalidInput, StoreUnavailable
from .events import summarise_counts
from .flask_api import API, ApiError, csrf_token, register_api
from .inflight import InflightRegistry
from .status import iso_utc

if TYPE_CHECKING:
    from .flask import FlaskMaintenance
    from .guard import MaintenanceGuard

logger = logging.getLogger("maintenance_guard")

STATIC_URL_PATH = "/_maintenance_guard/static"


def make_blueprint(ext: FlaskMaintenance, *, dashboard: bool = True) -> Blueprint:
    """The ``maintenance_guard`` blueprint with every route of the extension."""
    bp = Blueprint(
        "maintenance_guard",
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path=STATIC_URL_PATH,
    )
    register_api(bp, ext)

    @bp.get("/maintenance")
    def status_page() -> str:
        guard = ext.active_guard
        admin = ext.request_is_admin()
        status = ext.status_dict(admin=admin)
        blocked = [
            {"operation": name, "message": guard.catalog.info(name).message}
            for name in status["blocked_operations"]
            if name in guard.catalog
        ]
        return render_template("mg_status.html", status=status, blocked=blocked)

    @bp.get("/maintenance/bypass/<path:secret>")
    def bypass(secret: str) -> BaseResponse:
        if not ext.bypass_secret_matches(secret) or not ext.config["BYPASS_SECRET"]:
            abort(404)
        from .flask import BYPASS_COOKIE

        response = redirect("/")
        response.set_cookie(
            BYPASS_COOKIE,
            ext.make_bypass_cookie(),
            max_age=int(ext.config["BYPASS_MAX_AGE"]),
            httponly=True,
            secure=request.is_secure,
            samesite="Lax",
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    if not dashboard:
        return bp

    @bp.get("/admin/maintenance")
    def admin_dashboard() -> Response | tuple[str, int]:
        if not ext.request_is_admin():
            return render_template("mg_forbidden.html"), 403
        response = Response(
            render_template(
                "mg_admin.html",
                status=ext.status_dict(admin=True),
                overview=admin_overview(ext),
                csrf_token=csrf_token(),
                operations=ext.active_guard.catalog.high_risk(),
            ),
            mimetype="text/html",
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.get(f"{API}/admin/overview")
    def api_admin_overview() -> Response:
        if not ext.request_is_admin():
            raise ApiError(403, "forbidden", "administrator access required")
        response = jsonify(admin_overview(ext))
        response.headers["Cache-Control"] = "no-store"
        return response

    return bp


def admin_overview(ext: FlaskMaintenance, *, events: int = 20) -> dict[str, Any]:
    """What the dashboard shows beside the status: jobs, refused attempts, history."""
    guard = ext.active_guard
    out: dict[str, Any] = {
        "active_jobs_count": ext.active_jobs_count(),
        "jobs": list_inflight_jobs(guard),
        "attempts": {},
        "events": [],
        "store_available": True,
    }
    try:
        out["attempts"] = summarise_counts(guard.store.read_attempt_counts())
        out["events"] = [event.to_dict() for event in guard.events(limit=events)]
    except StoreUnavailable:
        out["store_available"] = False
    return out


def list_inflight_jobs(guard: MaintenanceGuard) -> list[dict[str, Any]] | None:
    """In-flight jobs from the registry (no job arguments), or None if it cannot be read."""
    try:
        jobs = InflightRegistry(guard.store, guard.settings.heartbeat_timeout).jobs()
    except (StoreUnavailable, InvalidInput):
        return None
    return [_job_dict(job) for job in jobs[:200]]


def _job_dict(job: Any) -> dict[str, Any]:
    return {
        "id": str(job.id),
        "name": str(job.name),
        "operation": job.operation,
        "worker": str(job.worker),
        "started_at": iso_utc(job.started_at) if job.started_at else None,
    }
