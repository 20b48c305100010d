"""The maintenance JSON API: public routes, admin routes, CSRF and bad bodies (real Redis)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from maintenance_guard import MaintenanceGuard
from tests.e2e.flask_support import build_app, make_guard_for_app

CONTRACT_KEYS = {
    "is_active",
    "mode",
    "reason",
    "estimated_duration",
    "started_at",
    "estimated_completion",
    "blocked_operations",
    "message",
    "active_jobs_count",
}


@pytest.fixture
def guard(make_guard: Callable[..., MaintenanceGuard]) -> MaintenanceGuard:
    return make_guard_for_app(make_guard)


@pytest.fixture
def app(guard: MaintenanceGuard) -> Flask:
    return build_app(guard)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def admin(app: Flask) -> tuple[FlaskClient, dict[str, str]]:
    """A client signed in as admin, and the headers carrying its CSRF token."""
    client = app.test_client()
    client.post("/login", json={"user": "admin"})
    page = client.get("/admin/maintenance")
    assert page.status_code == 200
    match = re.search(r'name="mg-csrf-token" content="([^"]+)"', page.get_data(as_text=True))
    assert match
    return client, {"X-CSRF-Token": match.group(1)}


def test_status_when_inactive_has_the_contract_shape(client: FlaskClient) -> None:
    body = client.get("/api/maintenance/status").get_json()
    assert CONTRACT_KEYS <= set(body)
    assert body["is_active"] is False
    assert body["mode"] is None
    assert body["blocked_operations"] == []


def test_status_when_active_shows_reason_end_and_blocked_but_no_admin_name_to_users(
    client: FlaskClient, guard: MaintenanceGuard
) -> None:
    guard.enable("normal", reason="DB upgrade", duration=3600, by="alice")
    body = client.get("/api/maintenance/status").get_json()
    assert CONTRACT_KEYS <= set(body)
    assert body["is_active"] is True and body["mode"] == "normal"
    assert body["reason"] == "DB upgrade"
    assert body["estimated_duration"] == 3600
    assert body["estimated_completion"].endswith("Z")
    assert "caption_generation" in body["blocked_operations"]
    assert "enabled_by" not in body and "alice" not in str(body)
    page = client.get("/maintenance").get_data(as_text=True)
    assert "DB upgrade" in page and "alice" not in page
    refused = client.post("/api/jobs").get_data(as_text=True)
    assert "alice" not in refused


def test_admin_status_includes_who_enabled_it(
    admin: tuple[FlaskClient, dict[str, str]], guard: MaintenanceGuard
) -> None:
    client, _ = admin
    guard.enable("normal", reason="r", by="alice")
    assert client.get("/api/maintenance/status").get_json()["enabled_by"] == "alice"


def test_status_counts_in_flight_jobs(client: FlaskClient, guard: MaintenanceGuard) -> None:
    import time

    guard.store.redis.zadd(guard.store.inflight_key, {"job-1": time.time() + 60})
    guard.enable("normal", reason="r")
    assert client.get("/api/maintenance/status").get_json()["active_jobs_count"] == 1


def test_blocked_operations_lists_messages(client: FlaskClient, guard: MaintenanceGuard) -> None:
    guard.enable("normal", reason="r", operations=["job_creation"])
    body = client.get("/api/maintenance/blocked-operations").get_json()
    assert body["blocked_operations"] == ["job_creation"]
    assert body["details"][0]["message"].startswith("New jobs cannot be started")


def test_message_for_an_operation_and_404_json_for_an_unknown_one(
    client: FlaskClient, guard: MaintenanceGuard
) -> None:
    guard.enable("normal", reason="r", duration=60)
    body = client.get("/api/maintenance/message/caption_generation").get_json()
    assert body["blocked"] is True
    assert body["message"].startswith("Caption generation is temporarily unavailable")
    assert 1 <= body["retry_after"] <= 60
    missing = client.get("/api/maintenance/message/<script>")
    assert missing.status_code == 404
    assert missing.get_json()["error"] == "unknown_operation"


def test_admin_routes_refuse_non_admins_with_403_json(
    client: FlaskClient, guard: MaintenanceGuard
) -> None:
    client.post("/login", json={"user": "bob"})
    for path in ("enable", "disable", "emergency"):
        response = client.post(f"/api/maintenance/{path}", json={"reason": "x"})
        assert response.status_code == 403
        assert response.get_json()["error"] == "forbidden"
    assert client.get("/admin/maintenance").status_code == 403
    assert client.get("/api/maintenance/admin/overview").status_code == 403
    assert guard.refresh().is_active is False


def test_admin_route_without_csrf_token_is_refused(
    admin: tuple[FlaskClient, dict[str, str]], guard: MaintenanceGuard
) -> None:
    client, _ = admin
    response = client.post("/api/maintenance/enable", json={"reason": "x"})
    assert response.status_code == 403
    assert response.get_json()["error"] == "csrf_failed"
    response = client.post(
        "/api/maintenance/enable", json={"reason": "x"}, headers={"X-CSRF-Token": "guess"}
    )
    assert response.status_code == 403
    assert guard.refresh().is_active is False


def test_cross_origin_admin_request_is_refused_even_with_the_token(
    admin: tuple[FlaskClient, dict[str, str]], guard: MaintenanceGuard
) -> None:
    client, csrf = admin
    for extra in ({"Origin": "http://evil.example"}, {"Referer": "http://evil.example/x"}):
        response = client.post(
            "/api/maintenance/enable", json={"reason": "x"}, headers={**csrf, **extra}
        )
        assert response.status_code == 403, extra
    assert guard.refresh().is_active is False
    same = client.post(
        "/api/maintenance/enable",
        json={"reason": "x"},
        headers={**csrf, "Origin": "http://localhost"},
    )
    assert same.status_code == 200


def test_admin_enables_and_disables_for_the_whole_fleet(
    admin: tuple[FlaskClient, dict[str, str]], make_guard: Callable[..., MaintenanceGuard]
) -> None:
    client, csrf = admin
    elsewhere = make_guard()
    response = client.post(
        "/api/maintenance/enable",
        json={
            "mode": "normal",
            "reason": "Database optimization",
            "duration": "1h",
            "auto_end": True,
            "operations": ["caption_generation"],
        },
        headers=csrf,
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["mode"] == "normal" and body["enabled_by"] == "admin"
    assert body["blocked_operations"] == ["caption_generation"]
    stored = elsewhere.refresh()
    assert stored.reason == "Database optimization" and stored.estimated_duration == 3600
    assert stored.auto_end is True
    response = client.post("/api/maintenance/disable", headers=csrf)
    assert response.status_code == 200 and response.get_json()["is_active"] is False
    assert elsewhere.refresh().is_active is False
    event = elsewhere.events(limit=1)[0]
    assert event.type == "disabled" and event.actor == "admin"


def test_emergency_route_switches_to_emergency(
    admin: tuple[FlaskClient, dict[str, str]], guard: MaintenanceGuard
) -> None:
    client, csrf = admin
    response = client.post(
        "/api/maintenance/emergency",
        json={"reason": "data leak", "grace_period": 0},
        headers=csrf,
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["mode"] == "emergency"
    assert guard.refresh().mode is not None and guard.refresh().mode.value == "emergency"


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "error"),
    [
        ("enable", {"data": "{", "content_type": "application/json"}, 400, "invalid_json"),
        ("enable", {"data": "[1]", "content_type": "application/json"}, 400, "invalid_body"),
        ("enable", {"data": "[" * 30000, "content_type": "application/json"}, 400, None),
        ("enable", {"json": {"reason": ""}}, 400, "invalid_input"),
        ("enable", {"json": {"reason": "x" * 501}}, 400, "invalid_input"),
        ("enable", {"json": {"reason": 5}}, 400, "invalid_input"),
        ("enable", {"json": {"reason": "x", "mode": "party"}}, 400, "invalid_input"),
        ("enable", {"json": {"reason": "x", "duration": -5}}, 400, "invalid_input"),
        ("enable", {"json": {"reason": "x", "duration": 10**400}}, 400, "invalid_input"),
        ("enable", {"json": {"reason": "x", "duration": "soon"}}, 400, "invalid_input"),
        ("enable", {"json": {"reason": "x", "duration": [1]}}, 400, "invalid_input"),
        ("enable", {"json": {"reason": "x", "auto_end": True}}, 400, "invalid_input"),
        ("enable", {"json": {"reason": "x", "auto_end": "yes"}}, 400, "invalid_input"),
        ("enable", {"json": {"reason": "x", "operations": "job_creation"}}, 400, None),
        ("enable", {"json": {"reason": "x", "operations": ["nope"]}}, 400, "unknown_operation"),
        ("enable", {"json": {"reason": "x", "operations": []}}, 400, "invalid_input"),
        ("enable", {"json": {"reason": "x", "sneaky": 1}}, 400, "invalid_body"),
        ("enable", {}, 400, "invalid_body"),
        ("enable", {"data": '{"reason":"x"}', "content_type": "text/plain"}, 415, None),
        (
            "enable",
            {"data": '{"reason":"x"}', "content_type": "application/x-www-form-urlencoded"},
            415,
            None,
        ),
        ("enable", {"data": "x" * 70_000, "content_type": "application/json"}, 413, None),
        ("disable", {"data": "x" * 70_000, "content_type": "application/json"}, 413, None),
        ("disable", {"json": {"reason": 7}}, 400, "invalid_input"),
        ("emergency", {"json": {"grace_period": 5}}, 400, "invalid_input"),
        ("emergency", {"json": {"reason": "x", "grace_period": -1}}, 400, "invalid_input"),
        ("emergency", {"json": {"reason": "x", "grace_period": 99999}}, 400, "invalid_input"),
        ("emergency", {"json": {"reason": "x", "grace_period": True}}, 400, "invalid_input"),
    ],
)
def test_bad_bodies_get_a_clear_json_error_and_change_nothing(
    admin: tuple[FlaskClient, dict[str, str]],
    guard: MaintenanceGuard,
    path: str,
    kwargs: dict[str, object],
    status: int,
    error: str | None,
) -> None:
    client, csrf = admin
    guard.enable("test", reason="baseline")
    before = guard.refresh()
    response = client.post(f"/api/maintenance/{path}", headers=csrf, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert isinstance(body["message"], str) and body["message"]
    if error is not None:
        assert body["error"] == error
    after = guard.refresh()
    assert after.version == before.version and after.mode == before.mode


def test_admin_overview_reports_attempts_and_history(
    admin: tuple[FlaskClient, dict[str, str]], app: Flask, guard: MaintenanceGuard
) -> None:
    client, _ = admin
    guard.enable("normal", reason="for history", by="alice")
    user = app.test_client()
    assert user.post("/api/jobs").status_code == 503
    guard.flush()
    body = client.get("/api/maintenance/admin/overview").get_json()
    assert body["attempts"]["blocked"]["job_creation"]["http"] == 1
    assert body["events"][0]["type"] == "enabled" and body["events"][0]["actor"] == "alice"
    assert body["jobs"] == []
    page = client.get("/admin/maintenance").get_data(as_text=True)
    assert "for history" in page and "job_creation" in page


def test_openapi_document_lists_exactly_the_api_routes(app: Flask, client: FlaskClient) -> None:
    doc = client.get("/api/maintenance/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/maintenance/") and not rule.rule.endswith("openapi.json"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            served |= {(path, m) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    assert served == documented


def test_status_reflects_a_change_at_once_despite_its_answer_cache(
    client: FlaskClient, guard: MaintenanceGuard
) -> None:
    assert client.get("/api/maintenance/status").get_json()["is_active"] is False
    guard.enable("normal", reason="now")
    assert client.get("/api/maintenance/status").get_json()["reason"] == "now"
    guard.disable()
    assert client.get("/api/maintenance/status").get_json()["is_active"] is False


def test_admin_pauses_and_resumes_queues_and_everyone_sees_the_pause(
    admin: tuple[FlaskClient, dict[str, str]], client: FlaskClient, guard: MaintenanceGuard
) -> None:
    admin_client, headers = admin
    response = admin_client.post(
        "/api/maintenance/pause",
        json={"queues": ["reports"], "reason": "reindex", "duration": "30m", "beat": True},
        headers=headers,
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert [p["queue"] for p in body["paused_queues"]] == ["reports"]
    assert body["paused_queues"][0]["by"] == "admin" and body["paused_queues"][0]["beat"]
    assert "no running worker of this app consumes reports" in body["warnings"][0]
    public = client.get("/api/maintenance/status").get_json()
    assert public["is_active"] is False
    assert public["paused_queues"] == [
        {"queue": "reports", "until": body["paused_queues"][0]["until"], "beat": True}
    ]  # no reason, author or workers for non-admins
    overview = admin_client.get("/api/maintenance/admin/overview").get_json()
    assert [p["queue"] for p in overview["paused_queues"]] == ["reports"]
    assert "reports" in admin_client.get("/admin/maintenance").get_data(as_text=True)
    response = admin_client.post(
        "/api/maintenance/resume", json={"queues": ["reports"]}, headers=headers
    )
    assert response.get_json() == {"resumed": ["reports"], "paused_queues": []}
    assert [e.type for e in guard.events(limit=2)] == ["queues_resumed", "queues_paused"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("pause", {"reason": "no scope"}),
        ("pause", {"queues": [], "reason": "x"}),
        ("pause", {"queues": "reports", "reason": "x"}),
        ("pause", {"queues": ["a b"], "reason": "x"}),
        ("pause", {"queues": ["q"], "reason": "x", "beat": "yes"}),
        ("pause", {"queues": ["q"], "reason": "x", "duration": [1]}),
        ("pause", {"queues": ["q"], "reason": "x", "workers": [1]}),
        ("pause", {"queues": ["q"], "reason": "x", "extra": 1}),
        ("resume", {}),
        ("resume", {"queues": ["q"], "all": True}),
        ("resume", {"all": "yes"}),
    ],
)
def test_bad_pause_bodies_get_a_clear_json_error_and_change_nothing(
    admin: tuple[FlaskClient, dict[str, str]], guard: MaintenanceGuard, path: str, body: dict
) -> None:
    client, headers = admin
    response = client.post(f"/api/maintenance/{path}", json=body, headers=headers)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] in ("invalid_input", "invalid_body")
    assert guard.refresh().paused_queues == ()


def test_pause_routes_refuse_non_admins_and_requests_without_the_csrf_token(
    client: FlaskClient, admin: tuple[FlaskClient, dict[str, str]], guard: MaintenanceGuard
) -> None:
    client.post("/login", json={"user": "bob"})
    for path in ("pause", "resume"):
        response = client.post(f"/api/maintenance/{path}", json={"queues": ["q"], "reason": "x"})
        assert response.status_code == 403
    admin_client, _ = admin
    response = admin_client.post("/api/maintenance/pause", json={"queues": ["q"], "reason": "x"})
    assert response.status_code == 403 and response.get_json()["error"] == "csrf_failed"
    assert guard.refresh().paused_queues == ()


def test_admin_schedules_moves_and_cancels_a_window_and_users_see_it_announced(
    admin: tuple[FlaskClient, dict[str, str]], client: FlaskClient, guard: MaintenanceGuard
) -> None:
    import time

    import icalendar

    from maintenance_guard.windows import iso_z

    admin_client, headers = admin
    start = time.time() + 7200
    response = admin_client.post(
        "/api/maintenance/schedule",
        json={"at": iso_z(start), "duration": "1h", "reason": "DB <b>upgrade</b>",
              "notice": "24h", "drain_before": "10m"},
        headers=headers,
    )  # fmt: skip
    assert response.status_code == 200, response.get_json()
    window = response.get_json()["window"]
    assert window["start"] == iso_z(start) and window["drain_before"] == 600
    public = client.get("/api/maintenance/status").get_json()
    assert public["upcoming"]["id"] == window["id"] and "by" not in public["upcoming"]
    assert public["upcoming"]["reason"] == "DB <b>upgrade</b>"  # JSON; pages escape it
    feed = client.get("/api/maintenance/schedule.ics")
    assert feed.mimetype == "text/calendar"
    (event,) = icalendar.Calendar.from_ical(feed.data).walk("VEVENT")
    assert str(event["uid"]).startswith(window["id"])
    assert event.decoded("dtstart").timestamp() == int(start)
    assert event.decoded("dtend").timestamp() == int(start) + 3600
    overlap = admin_client.post(
        "/api/maintenance/schedule",
        json={"at": iso_z(start + 600), "duration": 60, "reason": "x"},
        headers=headers,
    )
    assert overlap.status_code == 400 and "overlaps window" in overlap.get_json()["message"]
    moved = admin_client.post(
        f"/api/maintenance/schedule/{window['id']}/reschedule",
        json={"at": iso_z(start + 86400)},
        headers=headers,
    )
    assert moved.get_json()["window"]["start"] == iso_z(start + 86400)
    cancelled = admin_client.post(
        f"/api/maintenance/schedule/{window['id']}/cancel", headers=headers
    )
    assert cancelled.get_json()["windows"] == []
    assert client.get("/api/maintenance/status").get_json()["upcoming"] is None
    assert (
        len(
            icalendar.Calendar.from_ical(client.get("/api/maintenance/schedule.ics").data).walk(
                "VEVENT"
            )
        )
        == 0
    )
    types = [e.type for e in guard.events(limit=3)]
    assert types == ["window_cancelled", "window_rescheduled", "window_scheduled"]


def test_a_window_announced_later_stays_out_of_the_feed_and_status_until_its_notice(
    client: FlaskClient, guard: MaintenanceGuard
) -> None:
    import time

    from maintenance_guard.windows import iso_z

    guard.windows.add(iso_z(time.time() + 3 * 86400), "1h", reason="later", notice="1d")
    assert client.get("/api/maintenance/status").get_json()["upcoming"] is None
    assert b"VEVENT" not in client.get("/api/maintenance/schedule.ics").data


def test_progress_updates_are_posted_by_admins_and_shown_to_everyone(
    admin: tuple[FlaskClient, dict[str, str]], client: FlaskClient, guard: MaintenanceGuard
) -> None:
    admin_client, headers = admin
    off = admin_client.post("/api/maintenance/update", json={"text": "x"}, headers=headers)
    assert off.status_code == 400 and "maintenance is off" in off.get_json()["message"]
    guard.enable("normal", reason="migration", by="alice")
    posted = admin_client.post(
        "/api/maintenance/update", json={"text": "Migration 60% done"}, headers=headers
    )
    assert [u["text"] for u in posted.get_json()["updates"]] == ["Migration 60% done"]
    public = client.get("/api/maintenance/status").get_json()
    assert [u["text"] for u in public["updates"]] == ["Migration 60% done"]
    assert "Migration 60% done" in client.get("/maintenance").get_data(as_text=True)
    client.post("/login", json={"user": "bob"})
    refused = client.post("/api/maintenance/update", json={"text": "x"})
    assert refused.status_code == 403


def test_the_banner_helper_embeds_the_state_and_the_script_is_cached(
    app: Flask, client: FlaskClient, guard: MaintenanceGuard
) -> None:
    import html
    import json as json_module

    with app.test_request_context("/"):
        tag = str(app.jinja_env.globals["maintenance_banner"]())
    assert tag.startswith('<script src="/maintenance/banner.js"') and tag.endswith(
        "defer></script>"
    )
    state = re.search(r'data-mg-state="([^"]*)"', tag)
    assert state and json_module.loads(html.unescape(state.group(1)))["is_active"] is False
    script = client.get("/maintenance/banner.js")
    assert script.status_code == 200 and "javascript" in script.content_type
    assert "max-age=3600" in script.headers["Cache-Control"]
    guard.enable("emergency", reason='"><script>alert(1)</script>', by="alice")
    assert client.get("/maintenance/banner.js").status_code == 200  # exempt in an emergency
    with app.test_request_context("/"):
        tag = str(app.jinja_env.globals["maintenance_banner"]())
    assert "<script>alert" not in tag and tag.count("<script") == 1
