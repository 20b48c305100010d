"""The admin routes check each field's type exactly as the OpenAPI document says: a wrong
type is a 400 JSON error and changes nothing. Real HTTP with a signed-in admin."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from maintenance_guard import MaintenanceGuard
from tests.e2e.flask_support import LiveServer, build_app
from tests.reliability.web import Browser


@pytest.fixture
def admin(guard: MaintenanceGuard) -> Iterator[Browser]:
    with LiveServer(build_app(guard)) as live:
        browser = Browser(live.url)
        browser.login_admin()
        yield browser


WRONG_TYPES: list[tuple[str, dict[str, Any]]] = [
    ("emergency", {"reason": "leak", "grace_period": "3"}),
    ("emergency", {"reason": "leak", "grace_period": 2.5}),
    ("emergency", {"reason": "leak", "grace_period": None}),
    ("emergency", {"reason": "leak", "grace_period": [3]}),
    ("emergency", {"reason": 12345}),
    ("emergency", {"reason": ["leak"]}),
    ("enable", {"reason": "db", "duration": 1.5}),
    ("enable", {"reason": "db", "duration": None}),
    ("enable", {"reason": "db", "duration": True}),
    ("enable", {"reason": "db", "duration": {"h": 1}}),
    ("enable", {"reason": "db", "auto_end": "yes", "duration": 60}),
    ("enable", {"reason": "db", "auto_end": 1, "duration": 60}),
    ("enable", {"reason": "db", "mode": 1}),
    ("enable", {"reason": "db", "mode": None}),
    ("enable", {"reason": "db", "mode": ["normal"]}),
    ("enable", {"reason": 42}),
    ("enable", {"reason": None}),
    ("enable", {"reason": "db", "operations": "caption_generation"}),
    ("enable", {"reason": "db", "operations": []}),
    ("enable", {"reason": "db", "operations": [1, 2]}),
    ("enable", {"reason": "db", "operations": None}),
    ("disable", {"reason": 5}),
    ("disable", {"reason": None}),
    ("disable", {"reason": {"text": "done"}}),
]


def stored(client: redis.Redis, guard: MaintenanceGuard) -> tuple[dict[str, str], int]:
    store: Any = guard.store
    return client.hgetall(store.state_key), int(client.xlen(store.events_key))


@pytest.mark.parametrize(("route", "body"), WRONG_TYPES)
def test_a_field_of_the_wrong_type_is_refused_with_400_and_changes_nothing(
    admin: Browser,
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    route: str,
    body: dict[str, Any],
) -> None:
    if route == "disable":
        guard.enable("normal", reason="on before the bad disable")
    before = stored(redis_client, guard)
    status, _, raw = admin.admin_post(f"/api/maintenance/{route}", body)
    assert status == 400, raw[:300]
    answer = json.loads(raw)
    assert answer["error"] == "invalid_input" and answer["message"]
    assert stored(redis_client, guard) == before


def test_well_typed_bodies_still_switch_including_integral_numbers_and_duration_text(
    admin: Browser, guard: MaintenanceGuard
) -> None:
    status, _, raw = admin.admin_post(
        "/api/maintenance/enable", {"reason": "db", "duration": 3600.0, "operations": ["read"]}
    )
    assert status == 200, raw[:300]
    assert guard.status().estimated_duration == 3600
    status, _, raw = admin.admin_post(
        "/api/maintenance/enable", {"reason": "db", "duration": "1h30m"}
    )
    assert status == 200, raw[:300]
    assert guard.status().estimated_duration == 5400
    assert admin.admin_post("/api/maintenance/disable", {"reason": "done"})[0] == 200
    status, _, raw = admin.admin_post(
        "/api/maintenance/emergency", {"reason": "leak", "grace_period": 0}
    )
    assert status == 200, raw[:300]
    assert json.loads(raw)["grace_period"] == 0
