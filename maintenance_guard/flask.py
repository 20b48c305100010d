"""Flask adapter: `FlaskMaintenance` refuses blocked requests and serves the status/admin routes.

A ``before_request`` hook classifies each request (a `maintenance_operation` decorator,
else glob patterns on endpoint names and URL rules, method-aware: see `flask_classify`) and
asks the guard; a refused request, or `MaintenanceActive` raised inside a view, gets 503
with ``Retry-After`` unless the app's `blocked_handler` answers. Admins pass only through
the application's own
``is_admin`` callable (or a signed bypass cookie); nothing a client sends in a header, query
parameter or forwarded address can make it an admin.
"""

from __future__ import annotations

import fnmatch
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, current_app, g, request
from flask.typing import ResponseReturnValue

from .errors import MaintenanceActive, StoreUnavailable
from .flask_bypass import BYPASS_COOKIE, FailedAttemptLimiter, bypass_fingerprint
from .flask_bypass import cookie_is_valid as _cookie_is_valid
from .flask_bypass import make_cookie as _make_cookie
from .flask_classify import (
    SAFE_METHODS,
    RequestClassifier,
    covers,
    maintenance_operation,
    serves_only_safe,
    view_declaration,
)
from .flask_config import CONFIG_PREFIX, DEFAULTS, EXTENSION_KEY
from .flask_negotiation import prefers_json
from .flask_refusal import refusal_response
from .guard import _ADMIN_SCOPE, MaintenanceGuard
from .modes import Operation
from .settings import GuardSettings
from .store import RedisStore

if TYPE_CHECKING:
    from .flask_stream import StatusBroadcaster

logger = logging.getLogger("maintenance_guard")

BlockedHandler = Callable[[MaintenanceActive], "ResponseReturnValue | None"]


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
        self._on_blocked: BlockedHandler | None = None
        self._classifier: RequestClassifier | None = None
        self._bypass_limiter: FailedAttemptLimiter | None = None
        self._patterns_checked = False
        self._patterns_lock = threading.Lock()
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
        self._classifier = RequestClassifier(self.guard.endpoint_operations)
        self._bypass_limiter = FailedAttemptLimiter(
            self.guard.store,
            per_address=int(self.config["BYPASS_MAX_FAILURES_PER_ADDRESS"]),
            total=int(self.config["BYPASS_MAX_FAILURES"]),
            window=float(self.config["BYPASS_FAILURE_WINDOW"]),
        )
        self._broadcaster = StatusBroadcaster(
            self.guard,
            max_clients=int(self.config["SSE_MAX_CLIENTS"]),
        )
        app.extensions[EXTENSION_KEY] = self
        self._configure_sessions(app)
        app.before_request(self.refuse_blocked_request)
        app.teardown_request(self._leave_admin_scope)
        # A task refused inside a view (``.delay()`` during maintenance) gets the same 503
        # as a refused request. A handler the app registers for MaintenanceActive, before
        # or after this, wins.
        if MaintenanceActive not in app.error_handler_spec[None][None]:
            app.register_error_handler(MaintenanceActive, self.blocked_response)
        app.register_blueprint(make_blueprint(self, dashboard=bool(self.config["DASHBOARD"])))
        if self.config["METRICS"]:
            from .metrics import mount_metrics

            endpoint = mount_metrics(app, self.guard, str(self.config["METRICS_PATH"]))
            exempt = tuple(self.config["EXEMPT_ENDPOINTS"] or ())
            self.config["EXEMPT_ENDPOINTS"] = (*exempt, endpoint)  # scrapes never refused

    def _configure_sessions(self, app: Flask) -> None:
        from .emergency import configure_sessions, setup_of
        from .sessions import SessionInvalidator, admin_predicate

        guard = self.active_guard
        client = app.config.get("SESSION_REDIS")
        if (
            setup_of(guard).sessions is not None
            or not self.config["INVALIDATE_SESSIONS"]
            or app.config.get("SESSION_TYPE") != "redis"
            or client is None
        ):
            return
        prefix = app.config.get("SESSION_KEY_PREFIX") or "session:"
        predicate = admin_predicate(self.config["SESSION_ADMIN_KEY"] or None)
        configure_sessions(guard, SessionInvalidator(client, prefix, predicate))

    def login_allowed(self, user_is_admin: bool) -> bool:
        """For a login view: False while an emergency refuses non-admin logins."""
        return self.active_guard.login_allowed(user_is_admin, user=self.request_user())

    def blocked_handler(self, handler: BlockedHandler) -> BlockedHandler:
        """Decorator: ``handler(refused)`` makes the answer to every refusal (a blocked
        request, or `MaintenanceActive` raised in a view); returning None keeps the
        default 503. Any Flask return value works; set ``Retry-After`` yourself."""
        self._on_blocked = handler
        return handler

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
        """The operation of the current request: decorator, endpoint name, URL rule.

        Method-aware (see `maintenance_guard.flask_classify`): unmapped GET/HEAD/OPTIONS
        are ``read``; other unmapped methods use
        ``MAINTENANCE_GUARD_UNMAPPED_WRITE_OPERATION`` (default: unclassified).
        """
        method = request.method
        rule = request.url_rule
        only_safe = serves_only_safe(rule.methods if rule is not None else None)
        if endpoint is not None:
            declared = view_declaration(current_app.view_functions.get(endpoint))
            if declared is not None and covers(declared[1], method, only_safe=only_safe):
                return declared[0]
        classifier = self._classifier or RequestClassifier(self.active_guard.endpoint_operations)
        found = classifier.match(
            endpoint, rule.rule if rule is not None else None, method, only_safe=only_safe
        )
        if found is not None:
            return found
        if method in SAFE_METHODS:
            return Operation.READ.value
        write_default = self.config["UNMAPPED_WRITE_OPERATION"]
        return str(write_default) if write_default else None

    def warn_unmatched_patterns(self, app: Flask) -> None:
        """Log once per pattern that matches no endpoint and no URL rule of ``app``
        (a blueprint renames endpoint ``create_job`` to ``v2.create_job``)."""
        classifier = self._classifier
        if classifier is None:
            return
        endpoints = list(app.view_functions)
        rules = [r.rule for r in app.url_map.iter_rules()]
        for pattern in classifier.unmatched(endpoints, rules):
            logger.warning(
                "maintenance-guard: endpoint pattern %r (-> %s) matches no endpoint and no "
                "URL rule of app %r, so it blocks nothing; blueprint endpoints are named "
                "'<blueprint>.<view>' and their rules carry the url_prefix",
                pattern.source,
                pattern.operation,
                app.name,
                extra={"mg_pattern": pattern.source, "mg_operation": pattern.operation},
            )

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
        if not self._patterns_checked:
            # At the first request the url map is complete (blueprints registered).
            with self._patterns_lock:
                if not self._patterns_checked:
                    self._patterns_checked = True
                    self.warn_unmatched_patterns(current_app._get_current_object())  # type: ignore[attr-defined]
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
        """JSON for API paths, JSON bodies and clients that prefer it
        (`maintenance_guard.flask_negotiation`); HTML otherwise."""
        if request.path.startswith("/api/") or request.is_json:
            return True
        return prefers_json(request.headers.get("Accept"))

    def blocked_response(self, refused: MaintenanceActive) -> Response:
        """The answer to a refusal: the app's `blocked_handler` if it gives one, else
        `default_blocked_response`."""
        if self._on_blocked is not None:
            answer = self._on_blocked(refused)
            if answer is not None:
                return current_app.make_response(answer)
        return self.default_blocked_response(refused)

    def default_blocked_response(self, refused: MaintenanceActive) -> Response:
        """503 with ``Retry-After``: JSON for API clients, the HTML page for browsers."""
        return refusal_response(self.active_guard, refused, as_json=self.wants_json())

    # ------------------------------------------------------------------ bypass cookie

    def _bypass_secrets(self) -> tuple[str | bytes, str] | None:
        secret_key = current_app.secret_key
        bypass = self.config["BYPASS_SECRET"]
        if not secret_key or not bypass:
            return None
        return secret_key, str(bypass)

    def _bypass_fingerprint(self) -> str:
        # Binds cookies to the current secrets: changing either revokes every cookie.
        secrets = self._bypass_secrets()
        if secrets is None:
            raise RuntimeError("the bypass cookie needs SECRET_KEY and a bypass secret")
        return bypass_fingerprint(*secrets)

    def bypass_secret_matches(self, candidate: str) -> bool:
        """Constant-time comparison with ``MAINTENANCE_GUARD_BYPASS_SECRET``."""
        secret = self.config["BYPASS_SECRET"]
        if not secret:
            return False
        return hmac.compare_digest(str(secret).encode(), candidate.encode())

    @property
    def bypass_limiter(self) -> FailedAttemptLimiter:
        """Counts wrong bypass secrets (raises RuntimeError before `init_app`)."""
        if self._bypass_limiter is None:
            raise RuntimeError("FlaskMaintenance.init_app(app) has not been called")
        return self._bypass_limiter

    def make_bypass_cookie(self) -> str:
        """A signed bypass cookie value (needs ``SECRET_KEY`` and a bypass secret)."""
        secrets = self._bypass_secrets()
        if secrets is None:
            raise RuntimeError(
                "the bypass cookie needs SECRET_KEY and MAINTENANCE_GUARD_BYPASS_SECRET"
            )
        return _make_cookie(*secrets)

    def has_valid_bypass_cookie(self) -> bool:
        """True if the request carries an unexpired bypass cookie signed by this app."""
        value = request.cookies.get(BYPASS_COOKIE)
        secrets = self._bypass_secrets()
        if not value or secrets is None:
            return False
        return _cookie_is_valid(value, *secrets, max_age=int(self.config["BYPASS_MAX_AGE"]))


def get_extension(app: Flask | None = None) -> FlaskMaintenance:
    """The `FlaskMaintenance` registered on ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    ext = target.extensions.get(EXTENSION_KEY)
    if not isinstance(ext, FlaskMaintenance):
        raise RuntimeError("FlaskMaintenance is not initialised on this app")
    return ext


__all__ = ["BYPASS_COOKIE", "FlaskMaintenance", "get_extension", "maintenance_operation"]
