"""The answer to a refused request: 503 JSON for API clients, the HTML page for browsers.

Also the wording the pages share: operation labels and "about 30 minutes" durations.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, render_template, url_for

from ..errors import MaintenanceActive
from ..guard import MaintenanceGuard


def about_duration(seconds: float) -> str:
    """A rough duration for people: "45 seconds", "29 minutes", "2 hours 15 minutes"."""
    n = max(1, int(round(seconds)))
    if n < 60:
        return f"{n} second{'s' if n != 1 else ''}"
    minutes = int(round(n / 60))
    if minutes < 60:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours, minutes = divmod(minutes, 60)
    if hours >= 48:
        days = int(round(hours / 24))
        return f"{days} days"
    text = f"{hours} hour{'s' if hours != 1 else ''}"
    if minutes and hours < 10:
        text += f" {minutes} minute{'s' if minutes != 1 else ''}"
    return text


def operation_labels(guard: MaintenanceGuard) -> dict[str, dict[str, str]]:
    """``{name: {"label", "message"}}`` for every operation of the guard's catalog."""
    out: dict[str, dict[str, str]] = {}
    for name in guard.catalog.names():
        info = guard.catalog.info(name)
        out[name] = {"label": info.title, "message": info.message}
    return out


def refusal_response(
    guard: MaintenanceGuard, refused: MaintenanceActive, *, as_json: bool
) -> Response:
    """503 with ``Retry-After`` and ``Cache-Control: no-store``."""
    alternatives: tuple[str, ...] = ()
    if refused.operation is not None and refused.operation in guard.catalog:
        alternatives = guard.catalog.info(refused.operation).alternatives
    status = refused.status
    if as_json:
        body: dict[str, Any] = refused.to_dict()
        body["alternatives"] = list(alternatives)
        body["reason"] = status.reason
        body["estimated_completion"] = status.to_dict()["estimated_completion"]
        body["status_url"] = url_for("maintenance_guard.status_page")
        response = jsonify(body)
    else:
        html = render_template(
            "mg_blocked.html",
            refused=refused,
            retry_text=about_duration(refused.retry_after),
            alternatives=alternatives,
            status=status.to_dict(),
            catalog=operation_labels(guard),
        )
        response = Response(html, mimetype="text/html")
    response.status_code = 503
    response.headers["Retry-After"] = str(max(1, int(refused.retry_after)))
    response.headers["Cache-Control"] = "no-store"
    return response
