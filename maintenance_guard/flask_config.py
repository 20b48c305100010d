"""Every ``MAINTENANCE_GUARD_*`` key of the Flask extension, with its default, in one place.

`FlaskMaintenance.init_app` reads these from ``app.config``; the guard's own settings
(``MAINTENANCE_GUARD_REDIS_URL``, ``..._KEY_PREFIX``, ...) are `GuardSettings` fields.
"""

from __future__ import annotations

from typing import Any

CONFIG_PREFIX = "MAINTENANCE_GUARD_"
EXTENSION_KEY = "maintenance_guard"

DEFAULTS: dict[str, Any] = {
    # Endpoint globs never refused (the maintenance pages and API always are exempt).
    "EXEMPT_ENDPOINTS": ("static",),
    # Operation for non-GET requests no pattern maps; None: unclassified (emergency only).
    "UNMAPPED_WRITE_OPERATION": None,
    # Secret for the bypass cookie URL (/maintenance/bypass/<secret>); None disables it.
    "BYPASS_SECRET": None,
    "BYPASS_MAX_AGE": 12 * 3600,
    # Wrong bypass secrets allowed per client address, and in total, per window (seconds);
    # fleet-wide through Redis. Past either limit the bypass URL answers 429.
    "BYPASS_MAX_FAILURES_PER_ADDRESS": 10,
    "BYPASS_MAX_FAILURES": 100,
    "BYPASS_FAILURE_WINDOW": 900,
    "CSRF": True,
    "MAX_BODY": 64 * 1024,
    "SSE_HEARTBEAT": 15.0,
    # Open status streams per process; each holds a server thread, so keep it at most a
    # quarter of the threads (gthread --threads 32 -> 8). Beyond it: 429, the page polls.
    "SSE_MAX_CLIENTS": 8,
    "SSE_MAX_AGE": 600.0,
    "DASHBOARD": True,
    # Sign-in link on the dashboard's 403 page: a URL or an endpoint name; None: the
    # app's ``login`` endpoint if it has one.
    "LOGIN_URL": None,
    "JOBS_CACHE_SECONDS": 1.0,
    # Serve Prometheus metrics (maintenance_guard.metrics) at METRICS_PATH, unauthenticated.
    "METRICS": False,
    "METRICS_PATH": "/metrics",
    # Emergency: invalidate the non-admin Flask-Session sessions (SESSION_TYPE "redis");
    # a session is an admin's when this key of it is truthy.
    "INVALIDATE_SESSIONS": True,
    "SESSION_ADMIN_KEY": "is_admin",
}
