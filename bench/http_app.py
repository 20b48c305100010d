"""The Flask app of the status-endpoint benchmark: the guarded status API and a bare
JSON endpoint of the same shape, in one app, served by one server.

Guard key prefix from ``$MGBENCH_PREFIX``. ``/bare`` returns a constant dict as large as
the status JSON, so the comparison isolates what the guard's endpoint costs.
"""

from __future__ import annotations

import os

from flask import Flask, Response, jsonify

from maintenance_guard import MaintenanceGuard
from maintenance_guard.flask import FlaskMaintenance

from .common import redis_url

app = Flask(__name__)
guard = MaintenanceGuard.from_url(redis_url(), key_prefix=os.environ.get("MGBENCH_PREFIX", "mgb"))
FlaskMaintenance(app, guard)

_BARE = {
    "is_active": True,
    "mode": "normal",
    "reason": "bench",
    "estimated_duration": None,
    "started_at": "2025-01-15T10:00:00Z",
    "estimated_completion": None,
    "blocked_operations": [
        "caption_generation",
        "job_creation",
        "platform_operations",
        "batch_operations",
        "user_data_modification",
        "image_processing",
    ],
    "message": "System maintenance in progress. Some features are temporarily unavailable.",
    "active_jobs_count": 0,
}


@app.get("/bare")
def bare() -> Response:
    """A plain Flask JSON endpoint (the baseline)."""
    response = jsonify(_BARE)
    response.headers["Cache-Control"] = "no-store"
    return response
