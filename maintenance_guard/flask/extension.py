"""`FlaskMaintenance`: the ``before_request`` hook that refuses blocked requests, and its setup.

The hook asks the guard about each request (classified by `classify`); a refusal, or
`MaintenanceActive` raised inside a view, is answered by `refusal` unless the app's
`blocked_handler` answers. An admin's request runs inside `MaintenanceGuard.admin_bypass`
until its teardown.
"""

from __future__ import annotations

import fnmatch
import hmac
import logging
import threading
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask.typing import ResponseReturnValue

from ..embedded import resolve_url
from ..emergency import configure_sessions, setup_of
from ..errors import MaintenanceActive
from ..guard import MaintenanceGuard
from ..metrics import mount_metrics
from ..sessions import SessionInvalidator, admin_predicate
from ..settings import GuardSettings
from ..store import RedisStore
from .bypass import (
    BYPASS_COOKIE,
    FailedAttemptLimiter,
    bypass_fingerprint,
    cookie_is_valid,
    make_cookie,
)
from .classify import RequestClassifier, classify_request, warn_unmatched_patterns
from .config import CONFIG_PREFIX, DEFAULTS, EXTENSION_KEY, ConfigVars, read_config
from .impact_view import SessionTally
from .negotiation import prefers_json
from .pages import make_blueprint
from .refusal import refusal_response
from .status_body import StatusBody
from .stream import StatusBroadcaster

logger = logging.getLogger("maintenance_guard")

BlockedHandler = Callable[[MaintenanceActive], "ResponseReturnValue | None"]
AdminLoader = Callable[[], bool]
UserNameLoader = Callable[[], "str | None"]

# Where an admin request keeps its open `admin_bypass` until teardown.
_ADMIN_BYPASS = "_mg_admin_bypass"


def _not_admin() -> bool:
    return False


def _no_user_name() -> str | None:
    return None


class FlaskMaintenance:
    """The Flask extension: request blocking, status and admin API, live stream, pages.

    The admin check and the user name are the application's: pass ``is_admin`` and
    ``user_name`` here, or set them later with `admin_loader` and `user_name_loader`. Both
    are called inside a request; the admin check is the only way a request is treated as
    an admin's. Without ``guard`` one is built from the app's ``MAINTENANCE_GUARD_*``
    config keys in `init_app`. One instance serves one app.
    """

    def __init__(
        self,
        app: Flask | None = None,
        guard: MaintenanceGuard | None = None,
        *,
        is_admin: AdminLoader | None = None,
        user_name: UserNameLoader | None = None,
    ) -> None:
        self.guard: MaintenanceGuard | None = guard
        self._is_admin: AdminLoader = is_admin or _not_admin
        self._user_name: UserNameLoader = user_name or _no_user_name
        self.config: dict[str, Any] = dict(DEFAULTS)
        self._status: StatusBody | None = None
        self._broadcaster: StatusBroadcaster | None = None
        self._on_blocked: BlockedHandler | None = None
        self._classifier: RequestClassifier | None = None
        self._bypass_limiter: FailedAttemptLimiter | None = None
        self.session_tally: SessionTally | None = None  # sessions by role, for the overview
        self._patterns_checked = False
        self._patterns_lock = threading.Lock()
        if app is not None:
            self.init_app(app)

    # ------------------------------------------------------------------ setup

    def init_app(self, app: Flask) -> None:
        """Read the config, build the guard if none was given, hook requests, add routes."""
        self.config = read_config(app.config)
        if self.guard is None:
            settings = GuardSettings.from_mapping(app.config, CONFIG_PREFIX)
            store = RedisStore.from_url(resolve_url(settings.redis_url), settings.key_prefix)
            self.guard = MaintenanceGuard(store, settings)
        jobs_ttl = float(self.config[ConfigVars.JOBS_CACHE_SECONDS])
        self._status = StatusBody(self.guard, jobs_ttl=jobs_ttl)
        self._classifier = RequestClassifier(self.guard.endpoint_operations)
        self._bypass_limiter = FailedAttemptLimiter(
            self.guard.store,
            per_address=int(self.config[ConfigVars.BYPASS_MAX_FAILURES_PER_ADDRESS]),
            total=int(self.config[ConfigVars.BYPASS_MAX_FAILURES]),
            window=float(self.config[ConfigVars.BYPASS_FAILURE_WINDOW]),
        )
        self._broadcaster = StatusBroadcaster(
            self.guard, max_clients=int(self.config[ConfigVars.SSE_MAX_CLIENTS])
        )
        app.extensions[EXTENSION_KEY] = self
        self._configure_sessions(app)
        admin_key = self.config[ConfigVars.SESSION_ADMIN_KEY] or None
        self.session_tally = SessionTally.for_app(app, admin_key)
        app.before_request(self.refuse_blocked_request)
        app.teardown_request(self._leave_admin_bypass)
        # A task refused inside a view (``.delay()`` during maintenance) gets the same 503
        # as a refused request. A handler the app registers for MaintenanceActive, before
        # or after this, wins.
        if MaintenanceActive not in app.error_handler_spec[None][None]:
            app.register_error_handler(MaintenanceActive, self.blocked_response)
        dashboard = bool(self.config[ConfigVars.DASHBOARD])
        app.register_blueprint(make_blueprint(self, dashboard=dashboard))
        if self.config[ConfigVars.METRICS]:
            endpoint = mount_metrics(app, self.guard, str(self.config[ConfigVars.METRICS_PATH]))
            exempt = tuple(self.config[ConfigVars.EXEMPT_ENDPOINTS] or ())
            # Scrapes are never refused.
            self.config[ConfigVars.EXEMPT_ENDPOINTS] = (*exempt, endpoint)

    def _configure_sessions(self, app: Flask) -> None:
        guard = self.active_guard
        client = app.config.get("SESSION_REDIS")
        if (
            setup_of(guard).sessions is not None
            or not self.config[ConfigVars.INVALIDATE_SESSIONS]
            or app.config.get("SESSION_TYPE") != "redis"
            or client is None
        ):
            return
        prefix = app.config.get("SESSION_KEY_PREFIX") or "session:"
        predicate = admin_predicate(self.config[ConfigVars.SESSION_ADMIN_KEY] or None)
        configure_sessions(guard, SessionInvalidator(client, prefix, predicate))

    def admin_loader(self, loader: AdminLoader) -> AdminLoader:
        """Decorator: ``loader()`` says whether the current request is an admin's (replaces
        ``is_admin``). It runs inside a request; an exception counts as "not admin"."""
        self._is_admin = loader
        return loader

    def user_name_loader(self, loader: UserNameLoader) -> UserNameLoader:
        """Decorator: ``loader()`` names the current request's user, or returns None
        (replaces ``user_name``); the name goes into the audit history."""
        self._user_name = loader
        return loader

    def blocked_handler(self, handler: BlockedHandler) -> BlockedHandler:
        """Decorator: ``handler(refused)`` makes the answer to every refusal (a blocked
        request, or `MaintenanceActive` raised in a view); returning None keeps the
        default 503. Any Flask return value works; set ``Retry-After`` yourself."""
        self._on_blocked = handler
        return handler

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

    # ------------------------------------------------------------------ status

    def active_jobs_count(self) -> int:
        """In-flight jobs, cached for ``MAINTENANCE_GUARD_JOBS_CACHE_SECONDS``."""
        return self._status.jobs_count() if self._status is not None else 0

    def status_json(self, *, admin: bool) -> bytes:
        """`status_dict` encoded, reused within the same second while nothing changes."""
        return self._status_body.as_json(admin=admin)

    def status_dict(self, *, admin: bool) -> dict[str, Any]:
        """The contract status JSON from memory; admin fields only for admins."""
        return self._status_body.as_dict(admin=admin)

    @property
    def _status_body(self) -> StatusBody:
        if self._status is None:
            raise RuntimeError("FlaskMaintenance.init_app(app) has not been called")
        return self._status

    # ------------------------------------------------------------------ blocking

    def classify(self, endpoint: str | None) -> str | None:
        """The operation of the current request: decorator, endpoint name, URL rule.

        Method-aware (see `maintenance_guard.flask.classify`): unmapped GET/HEAD/OPTIONS
        are ``read``; other unmapped methods use
        ``MAINTENANCE_GUARD_UNMAPPED_WRITE_OPERATION`` (default: unclassified).
        """
        rule = request.url_rule
        view = current_app.view_functions.get(endpoint) if endpoint is not None else None
        classifier = self._classifier or RequestClassifier(self.active_guard.endpoint_operations)
        write_default = self.config[ConfigVars.UNMAPPED_WRITE_OPERATION]
        return classify_request(
            classifier,
            view,
            endpoint,
            rule.rule if rule is not None else None,
            rule.methods if rule is not None else None,
            request.method,
            unmapped_write=str(write_default) if write_default else None,
        )

    def warn_unmatched_patterns(self, app: Flask) -> None:
        """Log once per pattern that matches no endpoint and no URL rule of ``app``."""
        if self._classifier is not None:
            rules = [r.rule for r in app.url_map.iter_rules()]
            warn_unmatched_patterns(self._classifier, list(app.view_functions), rules, app.name)

    def is_exempt(self, endpoint: str | None) -> bool:
        """True for the maintenance routes themselves and the configured exempt endpoints."""
        if endpoint is None:
            return False
        if endpoint.startswith(EXTENSION_KEY + "."):
            return True
        patterns: Iterable[str] = self.config[ConfigVars.EXEMPT_ENDPOINTS] or ()
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
                self._enter_admin_bypass(guard)
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
    def _enter_admin_bypass(guard: MaintenanceGuard) -> None:
        if _ADMIN_BYPASS not in g:
            stack = ExitStack()
            stack.enter_context(guard.admin_bypass())
            setattr(g, _ADMIN_BYPASS, stack)

    @staticmethod
    def _leave_admin_bypass(_exc: BaseException | None = None) -> None:
        stack: ExitStack | None = g.pop(_ADMIN_BYPASS, None)
        if stack is not None:
            stack.close()

    def wants_json(self) -> bool:
        """JSON for API paths, JSON bodies and clients that prefer it
        (`maintenance_guard.flask.negotiation`); HTML otherwise."""
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
        bypass = self.config[ConfigVars.BYPASS_SECRET]
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
        secret = self.config[ConfigVars.BYPASS_SECRET]
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
        return make_cookie(*secrets)

    def has_valid_bypass_cookie(self) -> bool:
        """True if the request carries an unexpired bypass cookie signed by this app."""
        value = request.cookies.get(BYPASS_COOKIE)
        secrets = self._bypass_secrets()
        if not value or secrets is None:
            return False
        max_age = int(self.config[ConfigVars.BYPASS_MAX_AGE])
        return cookie_is_valid(value, *secrets, max_age=max_age)


def get_extension(app: Flask | None = None) -> FlaskMaintenance:
    """The `FlaskMaintenance` registered on ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    ext = target.extensions.get(EXTENSION_KEY)
    if not isinstance(ext, FlaskMaintenance):
        raise RuntimeError("FlaskMaintenance is not initialised on this app")
    return ext
