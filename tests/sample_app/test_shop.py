"""The shop's behaviour in normal, emergency and test mode, written only with the
maintenance-guard plugin's fixtures (``maintenance_guard``, ``maintenance``) and helpers,
and pytest-celery's ``celery_app`` / ``celery_worker``. Runs on the in-memory store, and
on a real Redis with ``--mg-redis-url`` (tests/integration/test_pytest_plugin.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from maintenance_guard import MaintenanceActive, MaintenanceGuard
from maintenance_guard.pytest import Maintenance, assert_allowed, assert_refused, parked_tasks

from .shop import refresh_search, resize_image

JSON = {"Accept": "application/json"}
ADMIN = {"X-Admin": "yes", **JSON}


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def test_reads_work_in_normal_mode_and_stop_in_an_emergency(web: Any, maintenance: Maintenance):
    with maintenance("normal"):
        assert_allowed(web.get("/products", headers=JSON))
    with maintenance("emergency"):
        assert_refused(web.get("/products", headers=JSON), operation="read", mode="emergency")
        assert_allowed(web.get("/products", headers=ADMIN))
    assert web.get("/products").json == {"1": "kettle", "2": "teapot"}


def test_an_upload_is_refused_with_503_in_normal_mode(web: Any, maintenance: Maintenance):
    with maintenance("normal", reason="database migration"):
        response = web.post("/products/1/image", headers=JSON)
        body = assert_refused(response, operation="image_processing", mode="normal")
        assert body is not None and body["reason"] == "database migration"
        assert_allowed(web.post("/products/1/image", headers=ADMIN))
    assert_allowed(web.post("/products/1/image", headers=JSON))


def test_a_narrowed_window_blocks_only_its_operations(web: Any, maintenance: Maintenance):
    with maintenance("normal", operations=["batch_operations"]):
        assert_allowed(web.post("/products/1/image", headers=JSON))


def test_a_browser_gets_the_maintenance_page(web: Any, maintenance: Maintenance):
    with maintenance("normal"):
        response = web.post("/products/1/image", headers={"Accept": "text/html"})
        assert assert_refused(response) is None  # the HTML page, not JSON
        assert b"maintenance" in response.data.lower()


def test_a_task_is_refused_at_publish(celery_app: Any, maintenance: Maintenance):
    with maintenance("normal"):
        refused = assert_refused(lambda: resize_image.delay(3), operation="image_processing")
        assert isinstance(refused, MaintenanceActive) and refused.retry_after >= 1
        with MaintenanceGuard.admin_bypass():
            assert_allowed(lambda: resize_image.delay(3))
    assert_allowed(lambda: resize_image.delay(3))


def test_a_deferred_submission_runs_after_maintenance(
    celery_app: Any, celery_worker: Any, maintenance: Maintenance
):
    with maintenance("normal"):
        result = assert_allowed(lambda: refresh_search.delay())  # parked, not refused
        assert [entry.task for entry in parked_tasks(celery_app)] == ["shop.refresh_search"]
        time.sleep(0.3)
        assert not result.ready()
    assert result.get(timeout=10) == "search refreshed"
    assert parked_tasks(celery_app) == []


def test_the_worker_holds_back_a_queued_message_that_comes_due_in_an_emergency(
    celery_app: Any, celery_worker: Any, maintenance: Maintenance
):
    result = resize_image.apply_async((5,), countdown=1)  # published while maintenance is off
    with maintenance("emergency"):
        wait_until(lambda: parked_tasks(celery_app))
        assert [entry.id for entry in parked_tasks(celery_app)] == [result.id]
        assert not result.ready()
    assert result.get(timeout=10) == "resized 5"


def test_normal_mode_lets_a_message_queued_before_it_run(
    celery_app: Any, celery_worker: Any, maintenance: Maintenance
):
    result = resize_image.apply_async((6,), countdown=1)  # queued before maintenance began
    with maintenance("normal"):
        assert result.get(timeout=10) == "resized 6"
        assert parked_tasks(celery_app) == []


def test_test_mode_blocks_nothing_and_counts_what_it_would_have_refused(
    web: Any, maintenance: Maintenance, maintenance_guard: MaintenanceGuard
):
    with maintenance("test"):
        assert_allowed(lambda: resize_image.delay(4))
        assert_allowed(web.post("/products/1/image", headers=JSON))
        maintenance_guard.flush()
        counts = maintenance_guard.attempt_counts()
    # The upload view submits resize_image too: one request, two task submissions.
    assert counts["would_block"]["image_processing"] == {"http": 1, "publish": 2}, counts


def test_maintenance_blocks_nest_and_restore(
    maintenance: Maintenance, maintenance_guard: MaintenanceGuard
):
    with maintenance("normal", reason="deploy", duration="1h"):
        with maintenance("emergency", reason="incident") as inner:
            assert inner.mode is not None and inner.mode.value == "emergency"
        status = maintenance_guard.status()
        assert status.mode is not None and status.mode.value == "normal"
        assert status.reason == "deploy" and status.estimated_duration is not None
    assert not maintenance_guard.status().is_active


def test_a_refusal_that_did_not_happen_fails_the_test(celery_app: Any, maintenance: Maintenance):
    with pytest.raises(pytest.fail.Exception, match="expected maintenance to refuse"):
        assert_refused(lambda: resize_image.name)
    with maintenance("normal"):
        with pytest.raises(pytest.fail.Exception, match="operation 'image_processing'"):
            assert_allowed(lambda: resize_image.delay(1))
