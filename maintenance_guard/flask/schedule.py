"""Scheduled windows on the web: the admin routes (schedule, cancel, reschedule, progress
updates), the public iCalendar feed, and the banner a host app puts on every page.

The banner: ``{{ maintenance_banner() }}`` in a template renders one deferred script tag
carrying the state from memory, so a page load adds no request beyond the (cached)
script; the script opens the live stream only while maintenance is announced or on.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import icalendar
from flask import Blueprint, Response, jsonify, send_from_directory, url_for
from markupsafe import Markup, escape

from ..windows import MaintenanceWindow
from .api import API, ApiError, read_json_body, require_admin
from .bodies import RescheduleRequest, ScheduleRequest, UpdateRequest

if TYPE_CHECKING:
    from .extension import FlaskMaintenance

_SCHEDULE_FIELDS = {
    "at",
    "duration",
    "mode",
    "reason",
    "notice",
    "auto_end",
    "operations",
    "drain_before",
}
BANNER_MAX_AGE = 3600  # seconds browsers may cache banner.js


def register_schedule_routes(bp: Blueprint, ext: FlaskMaintenance) -> None:
    """Add the schedule API, the iCalendar feed and the banner script to ``bp``."""

    def windows_body() -> dict[str, Any]:
        return {"windows": [w.to_dict(include_admin=True) for w in ext.active_guard.windows.list()]}

    @bp.post(f"{API}/schedule")
    def api_schedule() -> Response:
        require_admin(ext)
        args = ScheduleRequest.from_body(read_json_body(ext, _SCHEDULE_FIELDS, optional=False))
        window = ext.active_guard.windows.add(
            args.at,
            args.duration,
            reason=args.reason,
            mode=args.mode,
            notice=args.notice,
            auto_end=args.auto_end,
            operations=args.operations,
            drain_before=args.drain_before,
            by=ext.request_user() or "admin",
        )
        return jsonify({"window": window.to_dict(include_admin=True), **windows_body()})

    @bp.get(f"{API}/schedule")
    def api_schedule_list() -> Response:
        if not ext.request_is_admin():
            raise ApiError(403, "forbidden", "administrator access required")
        response = jsonify(windows_body())
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.post(f"{API}/schedule/<window_id>/cancel")
    def api_schedule_cancel(window_id: str) -> Response:
        require_admin(ext)
        read_json_body(ext, set(), optional=True)
        window = ext.active_guard.windows.cancel(window_id, by=ext.request_user() or "admin")
        return jsonify({"window": window.to_dict(include_admin=True), **windows_body()})

    @bp.post(f"{API}/schedule/<window_id>/reschedule")
    def api_schedule_move(window_id: str) -> Response:
        require_admin(ext)
        args = RescheduleRequest.from_body(read_json_body(ext, {"at"}, optional=False))
        window = ext.active_guard.windows.reschedule(
            window_id, args.at, by=ext.request_user() or "admin"
        )
        return jsonify({"window": window.to_dict(include_admin=True), **windows_body()})

    @bp.post(f"{API}/update")
    def api_update() -> Response:
        require_admin(ext)
        args = UpdateRequest.from_body(read_json_body(ext, {"text"}, optional=False))
        status = ext.active_guard.post_update(args.text, by=ext.request_user() or "admin")
        return jsonify({"updates": [u.to_dict(include_admin=True) for u in status.updates]})

    @bp.get(f"{API}/schedule.ics")
    def api_schedule_ics() -> Response:
        guard = ext.active_guard
        now = guard.now()
        announced = [w for w in guard.current().windows if w.is_announced(now)]
        return Response(
            calendar(announced),
            mimetype="text/calendar",
            headers={"Cache-Control": "public, max-age=60"},
        )

    @bp.get("/maintenance/banner.js")
    def banner_js() -> Response:
        response = send_from_directory(bp.static_folder or "", "banner.js", max_age=BANNER_MAX_AGE)
        response.headers["Content-Type"] = "text/javascript; charset=utf-8"
        return response

    def maintenance_banner() -> Markup:
        status = ext.status_dict(admin=False)
        state = {
            key: status.get(key)
            for key in (
                "is_active",
                "mode",
                "reason",
                "started_at",
                "estimated_completion",
                "blocked_operations",
                "message",
                "upcoming",
            )
        }
        attributes = {
            "src": url_for("maintenance_guard.banner_js"),
            "data-mg-state": json.dumps(state, separators=(",", ":")),
            "data-stream-url": url_for("maintenance_guard.api_stream"),
            "data-status-url": url_for("maintenance_guard.api_status"),
            "data-status-page": url_for("maintenance_guard.status_page"),
        }
        rendered = " ".join(f'{name}="{escape(value)}"' for name, value in attributes.items())
        return Markup(f"<script {rendered} defer></script>")  # noqa: S704 (every value escaped)

    bp.add_app_template_global(maintenance_banner, "maintenance_banner")


def calendar(windows: list[MaintenanceWindow]) -> bytes:
    """An iCalendar (RFC 5545) document with one event per window."""
    cal = icalendar.Calendar()
    cal.add("prodid", "-//maintenance-guard//scheduled maintenance//EN")
    cal.add("version", "2.0")
    cal.add("x-wr-calname", "Scheduled maintenance")
    for window in sorted(windows, key=lambda w: w.start_at):
        event = icalendar.Event()
        event.add("uid", f"{window.id}@maintenance-guard")
        event.add("summary", f"Maintenance ({window.mode}): {window.reason}")
        event.add("dtstart", datetime.fromtimestamp(window.start_at, tz=timezone.utc))
        event.add("dtend", datetime.fromtimestamp(window.end_at, tz=timezone.utc))
        event.add("dtstamp", datetime.fromtimestamp(window.announce_at, tz=timezone.utc))
        blocked = ", ".join(window.blocked_operations) or "nothing (test mode)"
        event.add("description", f"{window.reason}\nUnavailable: {blocked}")
        cal.add_component(event)
    return bytes(cal.to_ical())
