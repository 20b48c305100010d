"""Flask adapter: refuse blocked requests, serve the maintenance status, API and dashboard.

Usage::

    from flask import Flask, session
    from maintenance_guard.flask import FlaskMaintenance, maintenance_operation

    app = Flask(__name__)
    app.config["SECRET_KEY"] = "..."      # for the CSRF token and the bypass cookie
    ext = FlaskMaintenance(app, guard)    # or FlaskMaintenance(guard=guard), then init_app

    @ext.admin_loader                     # or FlaskMaintenance(..., is_admin=...)
    def is_admin() -> bool:
        return session.get("role") == "admin"

    @ext.user_name_loader                 # or FlaskMaintenance(..., user_name=...)
    def user_name() -> str | None:
        return session.get("user")

    @app.post("/images")
    @maintenance_operation("image_processing")   # wins over the endpoint patterns
    def upload(): ...

A ``before_request`` hook classifies each request (the view's `maintenance_operation`,
else the guard's ``endpoint_operations`` globs on endpoint names and URL rules,
method-aware) and asks the guard. A refused request, or `MaintenanceActive` raised inside
a view, gets 503 with ``Retry-After`` (JSON or an HTML page, by the ``Accept`` header)
unless a handler set with ``@ext.blocked_handler`` answers. Admins pass only through the
application's admin check (or a signed bypass cookie); nothing a client sends in a header,
query parameter or forwarded address makes it an admin. An admin's request runs inside
`MaintenanceGuard.admin_bypass`, so tasks its view submits pass the Celery guard too.

The extension also adds the ``maintenance_guard`` blueprint: ``/maintenance`` (status
page), ``/admin/maintenance`` (dashboard), ``/api/maintenance/*`` (JSON API, OpenAPI 3.1
at ``/api/maintenance/openapi.json``) and the bypass URL. Its settings are the
``MAINTENANCE_GUARD_*`` keys of ``app.config``, listed in `ConfigVars`.

Modules: `extension` (the hook and its setup), `classify`, `negotiation`, `refusal`,
`bypass`, `config`, `status_body`, `api`, `bodies`, `pages`, `stream`, `openapi`.
"""

from __future__ import annotations

from .bypass import BYPASS_COOKIE
from .classify import maintenance_operation
from .config import ConfigVars
from .extension import FlaskMaintenance, get_extension

__all__ = [
    "BYPASS_COOKIE",
    "ConfigVars",
    "FlaskMaintenance",
    "get_extension",
    "maintenance_operation",
]
