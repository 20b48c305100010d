"""Every ``MAINTENANCE_GUARD_*`` key of the Flask extension, with its default, in one place.

`FlaskMaintenance.init_app` reads each key from ``app.config`` (with `CONFIG_PREFIX`) into
``ext.config`` (without it); code reads ``ext.config[ConfigVars.NAME]``. The guard's own
settings (``MAINTENANCE_GUARD_REDIS_URL``, ``..._KEY_PREFIX``, ...) are `GuardSettings`
fields, read by `GuardSettings.from_mapping` when the extension builds the guard.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

CONFIG_PREFIX = "MAINTENANCE_GUARD_"
EXTENSION_KEY = "maintenance_guard"


class ConfigVars:
    """The extension's keys as ``ext.config`` names them (``app.config``: with the prefix)."""

    # Endpoint globs never refused (the maintenance pages and API always are exempt).
    EXEMPT_ENDPOINTS = "EXEMPT_ENDPOINTS"
    # Operation for non-GET requests no pattern maps; None: unclassified (emergency only).
    UNMAPPED_WRITE_OPERATION = "UNMAPPED_WRITE_OPERATION"
    # Secret for the bypass cookie URL (/maintenance/bypass/<secret>); None disables it.
    BYPASS_SECRET = "BYPASS_SECRET"
    BYPASS_MAX_AGE = "BYPASS_MAX_AGE"
    # Wrong bypass secrets allowed per client address, and in total, per window (seconds);
    # fleet-wide through Redis. Past either limit the bypass URL answers 429.
    BYPASS_MAX_FAILURES_PER_ADDRESS = "BYPASS_MAX_FAILURES_PER_ADDRESS"
    BYPASS_MAX_FAILURES = "BYPASS_MAX_FAILURES"
    BYPASS_FAILURE_WINDOW = "BYPASS_FAILURE_WINDOW"
    # Admin routes need the session's CSRF token and a same-origin Origin/Referer.
    CSRF = "CSRF"
    # Largest admin request body, in bytes.
    MAX_BODY = "MAX_BODY"
    SSE_HEARTBEAT = "SSE_HEARTBEAT"
    # Open status streams per process; each holds a server thread, so keep it at most a
    # quarter of the threads (gthread --threads 32 -> 8). Beyond it: 429, the page polls.
    SSE_MAX_CLIENTS = "SSE_MAX_CLIENTS"
    SSE_MAX_AGE = "SSE_MAX_AGE"
    DASHBOARD = "DASHBOARD"
    # Sign-in link on the dashboard's 403 page: a URL or an endpoint name; None: the
    # app's ``login`` endpoint if it has one.
    LOGIN_URL = "LOGIN_URL"
    JOBS_CACHE_SECONDS = "JOBS_CACHE_SECONDS"
    # Serve Prometheus metrics (maintenance_guard.metrics) at METRICS_PATH, unauthenticated.
    METRICS = "METRICS"
    METRICS_PATH = "METRICS_PATH"
    # Emergency: invalidate the non-admin Flask-Session sessions (SESSION_TYPE "redis");
    # a session is an admin's when this key of it is truthy.
    INVALIDATE_SESSIONS = "INVALIDATE_SESSIONS"
    SESSION_ADMIN_KEY = "SESSION_ADMIN_KEY"


DEFAULTS: dict[str, Any] = {
    ConfigVars.EXEMPT_ENDPOINTS: ("static",),
    ConfigVars.UNMAPPED_WRITE_OPERATION: None,
    ConfigVars.BYPASS_SECRET: None,
    ConfigVars.BYPASS_MAX_AGE: 12 * 3600,
    ConfigVars.BYPASS_MAX_FAILURES_PER_ADDRESS: 10,
    ConfigVars.BYPASS_MAX_FAILURES: 100,
    ConfigVars.BYPASS_FAILURE_WINDOW: 900,
    ConfigVars.CSRF: True,
    ConfigVars.MAX_BODY: 64 * 1024,
    ConfigVars.SSE_HEARTBEAT: 15.0,
    ConfigVars.SSE_MAX_CLIENTS: 8,
    ConfigVars.SSE_MAX_AGE: 600.0,
    ConfigVars.DASHBOARD: True,
    ConfigVars.LOGIN_URL: None,
    ConfigVars.JOBS_CACHE_SECONDS: 1.0,
    ConfigVars.METRICS: False,
    ConfigVars.METRICS_PATH: "/metrics",
    ConfigVars.INVALIDATE_SESSIONS: True,
    ConfigVars.SESSION_ADMIN_KEY: "is_admin",
}


def read_config(app_config: MutableMapping[str, Any]) -> dict[str, Any]:
    """``ext.config`` from an app's config: every key, the app's value or the default
    (which is also set on ``app.config``, as Flask extensions do)."""
    for key, value in DEFAULTS.items():
        app_config.setdefault(CONFIG_PREFIX + key, value)
    return {key: app_config[CONFIG_PREFIX + key] for key in DEFAULTS}
