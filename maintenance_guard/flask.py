"""Flask adapter: `FlaskMaintenance` refuses blocked requests and serves the status/admin routes.

A ``before_request`` hook classifies each request's endpoint (a `maintenance_operation`
decorator, else glob patterns on endpoint names and URL rules) and asks the guard; a refused
request gets 503 with ``Retry-After``. Admins pass only through the application's own
``is_admin`` callable (or a signed bypass cookie); nothing a client sends in a header, query
parameter or forwarded address can make it an admin.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask, Response, current_app, g, jsonify, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

from .errors import InvalidInput, MaintenanceActive, StoreUnavailable
from .guard import _ADMIN_SCOPE, MaintenanceGuard
from .modes import Operation
from .settings import GuardSettings
from .store import RedisStore

if TYPE_CHECKING:
    from .flask_stream import StatusBroadcaster

logger = logging.getLogger("maintenance_guard")

F = TypeVar("F", bound=Callable[..., Any])

CONFIG_PREFIX = "MAINTENANCE_GUARD_"
EXTENSION_KEY = "maintenance_guard"
BYPASS_COOKIE = "maintenance_guard_bypass"
_BYPASS_SALT = "maintenance-guard-bypass"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

DEFAULTS: dict[str, Any] = {
    # Endpoint globs never refused (the maintenance pages and API always are exempt).
    "EXEMPT_ENDPOINTS": ("static",),
    # Operation for non-GET requests no pattern maps; None: unclassified (emergency only).
    "UNMAPPED_WRITE_OPERATION": None,
    # Secret for the bypass cookie URL (/maintenance/bypass/<secret>); None disables it.
    "BYPASS_SECRET": None,
    "BYPASS_MAX_AGE": 12 * 3600,
    "CSRF": True,
    "MAX_BODY": 64 * 1024,
    "SSE_HEARTBEAT": 15.0,
    "SSE_MAX_CLIENTS": 200,
    "SSE_MAX_AGE": 600.0,
    "DASHBOARD": True,
    "JOBS_CACHE_SECONDS": 1.0,
    # Serve Prometheus metrics (maintenance_guard.metrics) at METRICS_PATH, unauthenticated.
    "METRICS": False,
    "METRICS_PATH": "/metrics",
    # Emergency: invalidate the non-admin Flask-Session sessions (SESSION_TYPE "redis");
    # a session is an admin's when this key of it is truthy.
    "INVALIDATE_SESSIONS": True,
    "SESSION_ADMIN_KEY": "is_admin",
}


def maintenance_operation(operation: str | Operation) -> Callable[[F], F]:
    """Declare the operation a view performs; it wins over endpoint patterns.

    The name must be in the guard's catalog when a request arrives (else
    `UnknownOperation` is raised then, never a silent "allowed").
    """
    name = operation.value if isinstance(operation, Operation) else operation
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise InvalidInput(f"operation name {name!r} must be a lowercase identifier")

    def mark(view: F) -> F:
        view._maintenance_operation = name  # type: ignore[attr-defined]
        return view

    return mark


class _JobCount:
    """The in-flight job count, read from the store at most once per ``ttl`` seconds."""

    def __init__(self, guard: MaintenanceGuard, ttl: float) -> None:
        self._guard = guard
        self._ttl = ttl
        self._lock = threading.Lock()
        self._value = 0
        self._read_at = float("-inf")

    def get(self) -> int:
        now = time.monotonic()
        if now - self._read_at < self._ttl:
            return self._value
        with self._lock:
            if now - self._read_at < self._ttl:
                return self._value
            try:
                self._value = self._guard.store.count_inflight(time.time())
            except StoreUnavailable:
                pass  # keep the last count; the guard logs store errors itself
            self._read_at = time.monotonic()
            return self._value


class FlaskMaintenance:
    """The Flask extension: request blocking, status and admin API, live stream, pages.

    ``is_admin()`` and ``user_name()`` are called inside a request; they are the only way
    a request is treated as an admin's. Without ``guard`` one is built from the app's
    ``MAINTENANCE_GUARD_*`` config keys in `init_app`. One instance serves one app.
    """

    def __init__(
        self,
        app: Flask | None = None,
        guard: MaintenanceGuard | None = None,
        *,
        is_admin: Callable[[], bool] | None = None,
        user_name: Callable[[], str | None] | None = None,
    ) -> None:
        self.guard: MaintenanceGuard | None = guard
        self._is_admin = is_admin or (lambda: False)
        self._user_name = user_name or (lambda: None)
        self.config: dict[str, Any] = dict(DEFAULTS)
        self._jobs: _JobCount | None = None
        self._broadcaster: StatusBroadcaster | None = None
        self._status_cache: dict[bool, tuple[tuple[int, int, int, bool, int], bytes]] = {}
        if app is not None:
            self.init_app(app)

    # ------------------------------------------------------------------ setup

    def init_app(self, app: Flask) -> None:
        """Read the config, build the guard if none was given, hook requests, add routes."""
        from .flask_pages import make_blueprint
        from .flask_stream import StatusBroadcaster

        for key, value in DEFAULTS.items():
            app.config.setdefault(CONFIG_PREFIX + key, value)
        self.config = {key: app.config[CONFIG_PREFIX + key] for key in DEFAULTS}
        if self.guard is None:
            settings = GuardSettings.from_mapping(app.config, CONFIG_PREFIX)
            from .embedded import resolve_url

            store = RedisStore.from_url(resolve_url(settings.redis_url), settings.key_prefix)
            self.guard = MaintenanceGuard(store, settings)
        self._jobs = _JobCount(self.guard, float(self.config["JOBS_CACHE_SECONDS"]))
        self._broadcaster = StatusBroadcaster(
            self.guard,
            max_clients=int(self.config["SSE_MAX_CLIENTS"]),
        )
        app.extensions[EXTENSION_KEY] = self
        self._configure_sessions(app)
        app.before_request(self.refuse_blocked_request)
        app.teardown_request(self._leave_admin_scope)
        app.register_blueprint(make_blueprint(self, dashboard=bool(self.config["DASHBOARD"])))
        if self.config["METRICS"]:
            from .metrics import mount_metrics

            endpoint = mount_metrics(app, self.guard, str(self.config["METRICS_PATH"]))
            exempt = tuple(self.config["EXEMPT_ENDPOINTS"] or ())
            self.config["EXEMPT_ENDPOINTS"] = (*exempt, endpoint)  # scrapes never refused

    def _configure_sessions(self, app: Flask) -> None:
        guard = self.active_guard
        client = app.config.get("SESSION_REDIS")
        if (
            guard.session_invalidator is not None
            or not self.config["INVALIDATE_SESSIONS"]
            or app.config.get("SESSION_TYPE") != "redis"
            or client is None
        ):
            return
        from .emergency import configure_sessions
        from .sessions import SessionInvalidator, admin_predicate

        prefix = app.config.get("SESSION_KEY_PREFIX") or "session:"
        predicate = admin_predicate(self.config["SESSION_ADMIN_KEY"] or None)
        configure_sessions(guard, SessionInvalidator(client, prefix, predicate))

    def login_allowed(self, user_is_admin: bool) -> bool:
        """For a login view: False while an emergency refuses non-admin logins."""
        return self.active_guard.login_allowed(user_is_admin, user=self.request_user())

    @property
    def active_guard(self) -> MaintenanceGuard:
        """The guard (raises RuntimeError before `init_app`)."""
        if self.guard is None:
            raise RuntimeError("FlaskMaintenance.init_app(app) has not been called")
        return self.guard

    @property
    def broadcaster(self) -> StatusBroadcaster:
        """The fan-out behind the status streams (raises RuntimeError before `init_app`)."""
        if self._broadcaster is None:
            raise RuntimeError("FlaskMaintenance.init_app(app) has not been called")
        return self._broadcaster

    # ------------------------------------------------------------------ identity

    def request_is_admin(self) -> bool:
        """The application's own admin check for the current request (False on error)."""
        try:
            return bool(self._is_admin())
        except Exception:
            logger.exception("is_admin callable failed; treating the request as non-admin")
            return False

    def request_user(self) -> str | None:
        """The application's user name for the current request, if any."""
        try:
            name = self._user_name()
        except Exception:
            logger.exception("user_name callable failed")
            return None
        return None if name is None else str(name)[:100]

    def active_jobs_count(self) -> int:
        """In-flight jobs, cached for ``MAINTENANCE_GUARD_JOBS_CACHE_SECONDS``."""
        return self._jobs.get() if self._jobs is not None else 0

    def status_json(self, *, admin: bool) -> bytes:
        """`status_dict` encoded, reused within the same second while nothing changes."""
        status = self.active_guard.current()
        jobs = self.active_jobs_count() if status.is_active else 0
        key = (id(status), status.version, jobs, admin, int(time.time()))
        cached = self._status_cache.get(admin)
        if cached is not None and cached[0] == key:
            return cached[1]
        if status.is_active:
            status = status.with_jobs(jobs)
        body = json.dumps(status.to_dict(include_admin=admin), separators=(",", ":")).encode()
        self._status_cache[admin] = (key, body)
        return body

    def status_dict(self, *, admin: bool) -> dict[str, Any]:
        """The contract status JSON from memory; admin fields only for admins."""
        status = self.active_guard.current()
        if status.is_active:
            status = status.with_jobs(self.active_jobs_count())
        return status.to_dict(include_admin=admin)

    # ------------------------------------------------------------------ blocking

    def classify(self, endpoint: str | None) -> str | None:
        """The operation of the current request's endpoint: decorator, endpoint name, URL rule.

        Unmapped GET/HEAD/OPTIONS are ``read``; other unmapped methods use
        ``MAINTENANCE_GUARD_UNMAPPED_WRITE_OPERATION`` (default: unclassified).
        """
        guard = self.active_guard
        if endpoint is not None:
            view = current_app.view_functions.get(endpoint)
            declared = getattr(view, "_maintenance_operation", None)
            if isinstance(declared, str):
                return declared
            found = guard.endpoint_operations.classify(endpoint)
            if found is not None:
                return found
        rule = request.url_rule
        if rule is not None:
            found = guard.endpoint_operations.classify(rule.rule)
            if found is not None:
                return found
        if request.method in _SAFE_METHODS:
            return Operation.READ.value
        write_default = self.config["UNMAPPED_WRITE_OPERATION"]
        return str(write_default) if write_default else None

    def is_exempt(self, endpoint: str | None) -> bool:
        """True for the maintenance routes themselves and the configured exempt endpoints."""
        if endpoint is None:
            return False
        if endpoint.startswith(EXTENSION_KEY + "."):
            return True
        patterns: Iterable[str] = self.config["EXEMPT_ENDPOINTS"] or ()
        return any(fnmatch.fnmatchcase(endpoint, p) for p in patterns)

    def refuse_blocked_request(self) -> Response | None:
        """The ``before_request`` hook: None to go on, or the 503 answer."""
        guard = self.active_guard
        # Before the exemption: a process that serves only the status API must still follow
        # changes. Idempotent; restarts the watcher in a forked server worker.
        guard.start()
        endpoint = request.endpoint
        if self.is_exempt(endpoint):
            return None
        if not guard.current().is_active:
            return None
        try:
            operation = self.classify(endpoint)
            admin = self.request_is_admin() or self.has_valid_bypass_cookie()
            if admin:
                # Tasks an admin submits from this view pass the Celery guard too.
                g._mg_admin_scope = _ADMIN_SCOPE.set(True)
            guard.check(
                operation,
                is_admin=admin,
                surface="http",
                target=endpoint or request.path[:200],
                user=None if admin else self.request_user(),
            )
        except MaintenanceActive as refused:
            return self.blocked_response(refused)
        return None

    @staticmethod
    def _leave_admin_scope(_exc: BaseException | None = None) -> None:
        token = g.pop("_mg_admin_scope", None)
        if token is not None:
            _ADMIN_SCOPE.reset(token)

    def wants_json(self) -> bool:
        """JSON for API paths and clients that prefer it; HTML otherwise."""
        if request.path.startswith("/api/") or request.is_json:
            return True
        best = request.accept_mimetypes.best_match(["text/html", "application/json"])
        return best == "application/json"

    def blocked_response(self, refused: MaintenanceActive) -> Response:
        """503 with ``Retry-After``: JSON for API clients, the HTML page for browsers."""
        guard = self.active_guard
        alternatives: tuple[str, ...] = ()
        if refused.operation is not None and refused.operation in guard.catalog:
            alternatives = guard.catalog.info(refused.operation).alternatives
        status = refused.status
        if self.wants_json():
            body = refused.to_dict()
            body["alternatives"] = list(alternatives)
            body["reason"] = status.reason
            body["estimated_completion"] = status.to_dict()["estimated_completion"]
            body["status_url"] = url_for("maintenance_guard.status_page")
            response = jsonify(body)
        else:
            html = render_template(
                "mg_blocked.html",
                refused=refused,
                alternatives=alternatives,
                status=status.to_dict(),
            )
            response = Response(html, mimetype="text/html")
        response.status_code = 503
        response.headers["Retry-After"] = str(max(1, int(refused.retry_after)))
        response.headers["Cache-Control"] = "no-store"
        return response

    # ------------------------------------------------------------------ bypass cookie

    def _bypass_serializer(self) -> URLSafeTimedSerializer | None:
        secret_key = current_app.secret_key
        if not secret_key or not self.config["BYPASS_SECRET"]:
            return None
        return URLSafeTimedSerializer(secret_key, salt=_BYPASS_SALT)

    def _bypass_fingerprint(self) -> str:
        # Binds cookies to the current bypass secret: rotating it revokes every cookie.
        secret = str(self.config["BYPASS_SECRET"]).encode()
        return hashlib.sha256(b"maintenance-guard-bypass:" + secret).hexdigest()[:32]

    def bypass_secret_matches(self, candidate: str) -> bool:
        """Constant-time comparison with ``MAINTENANCE_GUARD_BYPASS_SECRET``."""
        secret = self.config["BYPASS_SECRET"]
        if not secret:
            return False
        return hmac.compare_digest(str(secret).encode(), candidate.encode())

    def make_bypass_cookie(self) -> str:
        """A signed bypass cookie value (needs ``SECRET_KEY`` and a bypass secret)."""
        serializer = self._bypass_serializer()
        if serializer is None:
            raise RuntimeError(
                "the bypass cookie needs SECRET_KEY and MAINTENANCE_GUARD_BYPASS_SECRET"
            )
        return serializer.dumps({"fp": self._bypass_fingerprint()})

    def has_valid_bypass_cookie(self) -> bool:
        """True if the request carries an unexpired bypass cookie signed by this app."""
        value = request.cookies.get(BYPASS_COOKIE)
        if not value:
            return False
        serializer = self._bypass_serializer()
        if serializer is None:
            return False
        try:
            data = serializer.loads(value, max_age=int(self.config["BYPASS_MAX_AGE"]))
        except BadSignature:  # also SignatureExpired
            return False
        return isinstance(data, dict) and hmac.compare_digest(
            str(data.get("fp", "")), self._bypass_fingerprint()
        )


def get_extension(app: Flask | None = None) -> FlaskMaintenance:
    """The `FlaskMaintenance` registered on ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    ext = target.extensions.get(EXTENSION_KEY)
    if not isinstance(ext, FlaskMaintenance):
        raise RuntimeError("FlaskMaintenance is not initialised on this app")
    return ext


__all__ = ["BYPASS_COOKIE", "FlaskMaintenance", "get_extension", "maintenance_operation"]
