"""Schemathesis against the served OpenAPI document: answers match it, none is a 500.

Two apps: one where the caller is an admin (CSRF off, so generated bodies reach the
validation code), one where nobody is (admin routes must answer 403). Both valid (positive)
and invalid (negative) requests are generated. The SSE stream never ends, so it is tested
over real HTTP in test_flask_live.py instead.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings

from maintenance_guard import MaintenanceGuard
from maintenance_guard.flask import FlaskMaintenance

OPENAPI = "/api/maintenance/openapi.json"
EXAMPLES_PER_OPERATION = 30
STATE_DEPENDENT = {
    ("POST", "/api/maintenance/schedule"),
    ("POST", "/api/maintenance/schedule/{window_id}/cancel"),
    ("POST", "/api/maintenance/schedule/{window_id}/reschedule"),
    ("POST", "/api/maintenance/update"),
}


def _app(guard: MaintenanceGuard, *, admin: bool) -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "schemathesis-" + "k" * 32
    app.config["MAINTENANCE_GUARD_CSRF"] = not admin
    FlaskMaintenance(app, guard, is_admin=lambda: admin, user_name=lambda: "fuzzer")
    return app


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize("admin", [True, False], ids=["admin", "anonymous"])
def test_api_matches_its_openapi_document_and_never_answers_500(
    make_guard: Callable[..., MaintenanceGuard], admin: bool, mode: schemathesis.GenerationMode
) -> None:
    guard = make_guard()
    app = _app(guard, admin=admin)
    schema = schemathesis.openapi.from_wsgi(OPENAPI, app)
    document = app.test_client().get(OPENAPI).get_json()
    calls: dict[str, set[int]] = {}
    for result in schema.exclude(path="/api/maintenance/stream").get_all_operations():
        operation = result.ok()
        raw = document["paths"][operation.path][operation.method.lower()]
        if mode is schemathesis.GenerationMode.NEGATIVE and not raw.get("requestBody"):
            continue  # only string path parameters: nothing to make invalid

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case) -> None:
            response = case.call()
            calls.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)
            assert response.status_code != 500, (
                f"{case.method} {case.formatted_path} -> 500: {response.text[:300]}"
            )
            # The admin app treats every caller as admin on purpose, so auth is "ignored".
            excluded = [schemathesis.checks.ignored_auth] if admin else []
            if (case.method, case.path) in STATE_DEPENDENT:
                # Valid by the schema, refused by the state: a start time that has
                # passed, an unknown window id, an update while maintenance is off.
                excluded.append(schemathesis.checks.positive_data_acceptance)
            if mode is schemathesis.GenerationMode.NEGATIVE:
                # The API accepts a documented superset (e.g. durations like "1h30m").
                excluded.append(schemathesis.checks.negative_data_rejection)
            case.validate_response(response, excluded_checks=excluded)

        check()
    assert len(calls) >= (8 if mode is schemathesis.GenerationMode.POSITIVE else 3), calls
    if admin and mode is schemathesis.GenerationMode.POSITIVE:
        assert 200 in calls["POST /api/maintenance/enable"], calls
    if not admin:
        assert calls["POST /api/maintenance/enable"] <= {403}, calls
