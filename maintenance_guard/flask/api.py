"""The maintenance blueprint's JSON API: public status routes and the admin switch routes.

Every answer of these routes is JSON, errors included (400 bad body, 403 not an admin or
CSRF failure, 404 unknown operation, 413 body too large, 415 not JSON, 409 concurrent
change, 503 store unreachable); none of them answers 500 for bad input.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, jsonify, request, session
from werkzeug.exceptions import HTTPException

from ..emergency import run_emergency
from ..errors import ConcurrentChange, InvalidInput, StoreUnavailable, UnknownOperation
from ..inputs import MAX_GRACE_SECONDS, clean_reason, parse_duration
from ..status import MaintenanceStatus, pause_dict
from .bodies import (
    DisableRequest,
    EmergencyRequest,
    EnableRequest,
    PauseRequest,
    ResumeRequest,
)
from .config import ConfigVars
from .openapi import openapi_document
from .stream import TooManyStreams

if TYPE_CHECKING:
    from .extension import FlaskMaintenance

logger = logging.getLogger("maintenance_guard")

API = "/api/maintenance"
CSRF_SESSION_KEY = "_maintenance_guard_csrf"
CSRF_HEADER = "X-CSRF-Token"

_ENABLE_FIELDS = {"mode", "reason", "duration", "auto_end", "operations"}
_DISABLE_FIELDS = {"reason"}
_EMERGENCY_FIELDS = {"reason", "grace_period"}
_PAUSE_FIELDS = {"queues", "reason", "duration", "workers", "beat"}
_RESUME_FIELDS = {"queues", "all"}


class ApiError(Exception):
    """An HTTP error answered as ``{"error": code, "message": text}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> Response:
    """A JSON error answer."""
    response = jsonify({"error": code, "message": message})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def csrf_token() -> str:
    """This session's CSRF token for the admin routes (made on first use)."""
    token = session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session[CSRF_SESSION_KEY] = token
    return token


def _same_origin(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()


def check_csrf() -> None:
    """Raise `ApiError` (403) unless the token header matches the session and the
    Origin/Referer, when sent, name this host."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null" and not _same_origin(origin):
        raise ApiError(403, "csrf_failed", "cross-origin request refused (Origin mismatch)")
    if origin == "null":
        raise ApiError(403, "csrf_failed", "cross-origin request refused (opaque Origin)")
    referer = request.headers.get("Referer")
    if origin is None and referer and not _same_origin(referer):
        raise ApiError(403, "csrf_failed", "cross-origin request refused (Referer mismatch)")
    expected = session.get(CSRF_SESSION_KEY)
    sent = request.headers.get(CSRF_HEADER, "")
    if not isinstance(expected, str) or not expected:
        raise ApiError(
            403, "csrf_failed", "no CSRF token in this session; load the dashboard first"
        )
    if not hmac.compare_digest(expected.encode(), sent.encode()):
        raise ApiError(403, "csrf_failed", f"missing or wrong {CSRF_HEADER} header")


def read_json_body(ext: FlaskMaintenance, allowed: set[str], *, optional: bool) -> dict[str, Any]:
    """The request's JSON object; raises `ApiError` 400/413/415. Unknown fields are refused."""
    limit = int(ext.config[ConfigVars.MAX_BODY])
    try:
        request.max_content_length = limit  # for Werkzeug's own parsing (3.1+)
    except AttributeError:
        pass  # older Werkzeug: no per-request limit; the checks below enforce it
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(413, "body_too_large", f"request body over {limit} bytes")
    if length is None:
        # A chunked body has no length: read at most one byte past the limit ourselves,
        # so an endless body is refused without being read whole.
        raw = _read_at_most(request.stream, limit + 1)
        if len(raw) > limit:
            raise ApiError(413, "body_too_large", f"request body over {limit} bytes")
    else:
        raw = request.get_data(cache=True)
    if not raw.strip():
        if optional:
            return {}
        raise ApiError(400, "invalid_body", "a JSON object body is required")
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"malformed JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        names = ", ".join(repr(k)[:60] for k in unknown[:5])
        raise ApiError(
            400, "invalid_body", f"unknown field(s) {names}; allowed: {', '.join(sorted(allowed))}"
        )
    return data


def _read_at_most(stream: Any, size: int) -> bytes:
    """Read until EOF or ``size`` bytes; a raw stream's read may return one chunk at a time."""
    parts: list[bytes] = []
    total = 0
    while total < size:
        piece = stream.read(size - total)
        if not piece:
            break
        parts.append(piece)
        total += len(piece)
    return b"".join(parts)


def report_to_json(report: object) -> object:
    """A JSON-friendly form of an emergency report, whatever its type."""
    to_dict = getattr(report, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if is_dataclass(report) and not isinstance(report, type):
        return json.loads(json.dumps(asdict(report), default=str))
    if isinstance(report, MaintenanceStatus):
        return report.to_dict(include_admin=True)
    return json.loads(json.dumps(report, default=str))


def require_admin(ext: FlaskMaintenance) -> None:
    """Raise `ApiError` (403) unless the caller is an admin and, when CSRF protection is
    on, the request passes `check_csrf`."""
    if not ext.request_is_admin():
        raise ApiError(403, "forbidden", "administrator access required")
    if ext.config[ConfigVars.CSRF]:
        check_csrf()


def register_api(bp: Blueprint, ext: FlaskMaintenance) -> None:
    """Add the public and admin API routes and the JSON error handlers to ``bp``."""

    def admin_route(rule: str, endpoint: str) -> Callable[[Callable[[], Response]], None]:
        def register(view: Callable[[], Response]) -> None:
            def guarded() -> Response:
                require_admin(ext)
                return view()

            bp.add_url_rule(rule, endpoint, guarded, methods=["POST"])

        return register

    @bp.get(f"{API}/status")
    def api_status() -> Response:
        return Response(
            ext.status_json(admin=ext.request_is_admin()),
            mimetype="application/json",
            headers={"Cache-Control": "no-store"},
        )

    @bp.get(f"{API}/blocked-operations")
    def api_blocked_operations() -> Response:
        guard = ext.active_guard
        status = guard.current()
        details = []
        for name in status.blocked_operations:
            info = guard.catalog.info(name)
            details.append(
                {
                    "operation": name,
                    "message": info.message,
                    "alternatives": list(info.alternatives),
                }
            )
        return jsonify(
            {
                "is_active": status.is_active,
                "mode": status.mode.value if status.mode else None,
                "blocked_operations": list(status.blocked_operations),
                "details": details,
            }
        )

    @bp.get(f"{API}/message/<operation>")
    def api_message(operation: str) -> Response:
        guard = ext.active_guard
        if operation not in guard.catalog:
            return error_response(404, "unknown_operation", "unknown operation")
        info = guard.catalog.info(operation)
        status = guard.current()
        blocked = operation in status.blocked_operations
        return jsonify(
            {
                "operation": operation,
                "blocked": blocked,
                "mode": status.mode.value if status.mode else None,
                "message": info.message if blocked else "",
                "alternatives": list(info.alternatives) if blocked else [],
                "retry_after": guard.refusal(operation, status).retry_after if blocked else None,
            }
        )

    @bp.get(f"{API}/stream")
    def api_stream() -> Response:
        admin = ext.request_is_admin()
        try:
            box = ext.broadcaster.subscribe()
        except TooManyStreams as exc:
            response = error_response(429, "too_many_streams", str(exc))
            response.headers["Retry-After"] = "10"
            return response

        def render(status: MaintenanceStatus | None) -> dict[str, Any]:
            if status is None:
                return ext.status_dict(admin=admin)
            if status.is_active:
                status = status.with_jobs(ext.active_jobs_count())
            return status.to_dict(include_admin=admin)

        body = ext.broadcaster.stream(
            box,
            render,
            heartbeat=float(ext.config[ConfigVars.SSE_HEARTBEAT]),
            max_age=float(ext.config[ConfigVars.SSE_MAX_AGE]),
        )
        response = Response(
            body,
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"},
        )
        # A generator never started does not run its finally; free the mailbox anyway.
        response.call_on_close(lambda: ext.broadcaster.unsubscribe(box))
        return response

    @bp.get(f"{API}/openapi.json")
    def api_openapi() -> Response:
        return jsonify(openapi_document(ext.active_guard.catalog.names()))

    @bp.get(f"{API}/csrf-token")
    def api_csrf_token() -> Response:
        if not ext.request_is_admin():
            raise ApiError(403, "forbidden", "administrator access required")
        response = jsonify({"csrf_token": csrf_token(), "header": CSRF_HEADER})
        response.headers["Cache-Control"] = "no-store"
        return response

    @admin_route(f"{API}/enable", "api_enable")
    def api_enable() -> Response:
        args = EnableRequest.from_body(read_json_body(ext, _ENABLE_FIELDS, optional=False))
        status = ext.active_guard.enable(
            args.mode,
            reason=args.reason,
            duration=args.duration,
            by=ext.request_user() or "admin",
            auto_end=args.auto_end,
            operations=args.operations,
        )
        return jsonify(_with_jobs(ext, status))

    @admin_route(f"{API}/disable", "api_disable")
    def api_disable() -> Response:
        args = DisableRequest.from_body(read_json_body(ext, _DISABLE_FIELDS, optional=True))
        status = ext.active_guard.disable(by=ext.request_user() or "admin", reason=args.reason)
        return jsonify(_with_jobs(ext, status))

    @admin_route(f"{API}/emergency", "api_emergency")
    def api_emergency() -> Response:
        args = EmergencyRequest.from_body(read_json_body(ext, _EMERGENCY_FIELDS, optional=False))
        reason = clean_reason(args.reason)
        grace = parse_duration(
            args.grace_period, what="grace_period", maximum=MAX_GRACE_SECONDS, allow_zero=True
        )
        guard = ext.active_guard
        actor = ext.request_user() or "admin"
        # wait=False: the grace period runs in the background, not in this request.
        report = run_emergency(guard, reason, grace, by=actor, wait=False)
        status = guard.current()
        body_out = _with_jobs(ext, status)
        body_out["grace_period"] = grace
        body_out["report"] = report_to_json(report)
        return jsonify(body_out)

    @admin_route(f"{API}/pause", "api_pause")
    def api_pause() -> Response:
        args = PauseRequest.from_body(read_json_body(ext, _PAUSE_FIELDS, optional=False))
        result = ext.active_guard.pause_queues(
            args.queues,
            reason=args.reason,
            by=ext.request_user() or "admin",
            duration=args.duration,
            workers=args.workers,
            beat=args.beat,
        )
        return jsonify(
            {
                "paused_queues": [pause_dict(p, include_admin=True) for p in result.pauses],
                "warnings": result.warnings,
            }
        )

    @admin_route(f"{API}/resume", "api_resume")
    def api_resume() -> Response:
        args = ResumeRequest.from_body(read_json_body(ext, _RESUME_FIELDS, optional=False))
        guard = ext.active_guard
        resumed = guard.resume_queues(
            args.queues, everything=args.everything, by=ext.request_user() or "admin"
        )
        left = guard.current().pauses(guard.now())
        return jsonify(
            {
                "resumed": list(resumed),
                "paused_queues": [pause_dict(p, include_admin=True) for p in left],
            }
        )

    @bp.errorhandler(ApiError)
    def on_api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message)

    @bp.errorhandler(UnknownOperation)
    def on_unknown_operation(exc: UnknownOperation) -> Response:
        return error_response(400, "unknown_operation", str(exc))

    @bp.errorhandler(InvalidInput)
    def on_invalid_input(exc: InvalidInput) -> Response:
        return error_response(400, "invalid_input", str(exc))

    @bp.errorhandler(ConcurrentChange)
    def on_concurrent_change(exc: ConcurrentChange) -> Response:
        return error_response(409, "concurrent_change", str(exc))

    @bp.errorhandler(StoreUnavailable)
    def on_store_unavailable(exc: StoreUnavailable) -> Response:
        logger.warning("maintenance API: store unavailable: %s", exc)
        response = error_response(503, "store_unavailable", "the state store cannot be reached")
        response.headers["Retry-After"] = "5"
        return response

    @bp.errorhandler(HTTPException)
    def on_http_error(exc: HTTPException) -> Response:
        if not request.path.startswith(API):
            return exc.get_response()  # type: ignore[return-value]
        code = exc.code or 500
        names = {413: "body_too_large", 415: "unsupported_media_type", 400: "bad_request"}
        return error_response(code, names.get(code, "http_error"), exc.description or exc.name)


def _with_jobs(ext: FlaskMaintenance, status: MaintenanceStatus) -> dict[str, Any]:
    if status.is_active:
        status = status.with_jobs(ext.active_jobs_count())
    return status.to_dict(include_admin=True)
