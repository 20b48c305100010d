"""The maintenance blueprint: the status page, the admin dashboard and the bypass cookie URL."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.routing import BuildError
from werkzeug.wrappers import Response as BaseResponse

from ..errors import InvalidInput, StoreUnavailable
from ..events import summarise_counts
from ..impact import sparkline_points
from ..inflight import InflightRegistry
from ..pausing import worker_queues
from ..status import iso_utc, pause_dict
from .api import API, ApiError, csrf_token, register_api
from .bypass import BYPASS_COOKIE
from .config import ConfigVars
from .impact_view import impact_dict
from .refusal import about_duration, operation_labels
from .schedule import register_schedule_routes

if TYPE_CHECKING:
    from ..guard import MaintenanceGuard
    from .extension import FlaskMaintenance

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
    register_schedule_routes(bp, ext)
    bp.add_app_template_filter(human_time, "mg_time")
    bp.add_app_template_filter(badge_text, "mg_badge")
    bp.add_app_template_filter(sparkline_points, "mg_sparkline")
    bp.add_app_template_global(lambda: dict(BADGES), "mg_badges")

    @bp.get("/maintenance")
    def status_page() -> str:
        admin = ext.request_is_admin()
        status = ext.status_dict(admin=admin)
        return render_template(
            "mg_status.html", status=status, catalog=operation_labels(ext.active_guard)
        )

    @bp.get("/maintenance/bypass/<path:secret>")
    def bypass(secret: str) -> BaseResponse:
        if not ext.config[ConfigVars.BYPASS_SECRET]:
            abort(404)
        address = request.remote_addr or "unknown"
        wait = ext.bypass_limiter.retry_after(address)
        if wait is not None:
            logger.warning(
                "bypass URL: too many wrong secrets; refusing for %ss",
                wait,
                extra={"mg_client": address, "mg_retry_after": wait},
            )
            return Response(
                f"Too many wrong attempts. Try again in about {about_duration(wait)}.\n",
                status=429,
                mimetype="text/plain",
                headers={"Retry-After": str(wait), "Cache-Control": "no-store"},
            )
        if not ext.bypass_secret_matches(secret):
            ext.bypass_limiter.record_failure(address)
            abort(404)
        response = redirect("/")
        response.set_cookie(
            BYPASS_COOKIE,
            ext.make_bypass_cookie(),
            max_age=int(ext.config[ConfigVars.BYPASS_MAX_AGE]),
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
            return render_template("mg_forbidden.html", login_url=login_url(ext)), 403
        response = Response(
            render_template(
                "mg_admin.html",
                status=ext.status_dict(admin=True),
                overview=admin_overview(ext),
                csrf_token=csrf_token(),
                operations=ext.active_guard.catalog.high_risk(),
                catalog=operation_labels(ext.active_guard),
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


BADGES = {
    "off": "All systems operational",
    "normal": "Maintenance in progress",
    "emergency": "Emergency maintenance in progress",
    "test": "Maintenance test running: everything works as usual",
}


def badge_text(mode: str | None) -> str:
    """The status badge's words for a mode (``"off"``/None: no maintenance)."""
    return BADGES.get(mode or "off", BADGES["normal"])


def human_time(iso: str | None) -> str:
    """``2025-01-15T10:00:00Z`` as ``2025-01-15 10:00 UTC`` (the page shows local time)."""
    if not iso:
        return ""
    day, _, clock = iso.partition("T")
    return f"{day} {clock[:5]} UTC" if clock else iso


def login_url(ext: FlaskMaintenance) -> str | None:
    """Where the 403 page sends people to sign in: ``MAINTENANCE_GUARD_LOGIN_URL`` (a URL or
    an endpoint name), else the app's ``login`` endpoint, with ``next`` set to this page."""
    configured = ext.config[ConfigVars.LOGIN_URL]
    target = str(configured) if configured else "login"
    if "/" in target:
        return target
    if target not in current_app.view_functions:
        return None
    try:
        return url_for(target, next=request.path)
    except BuildError:  # the endpoint needs URL arguments
        return None


def admin_overview(ext: FlaskMaintenance, *, events: int = 20) -> dict[str, Any]:
    """What the dashboard shows beside the status: jobs, refused attempts (ever), the
    last maintenance window's impact, history."""
    guard = ext.active_guard
    out: dict[str, Any] = {
        "active_jobs_count": ext.active_jobs_count(),
        "jobs": list_inflight_jobs(guard),
        "attempts": {},
        "events": [],
        "store_available": True,
        "paused_queues": [
            pause_dict(p, include_admin=True) for p in guard.current().pauses(guard.now())
        ],
        "workers": {},
        "impact": None,
    }
    try:
        out["workers"] = worker_queues(guard) or {}
        out["attempts"] = summarise_counts(guard.store.read_attempt_counts())
        out["events"] = [event.to_dict() for event in guard.events(limit=events)]
        out["impact"] = impact_dict(guard, ext.session_tally)
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
