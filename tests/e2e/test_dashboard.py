"""A real browser (Debian's chromium through Playwright) on the real server.

An admin switches maintenance on and off from the dashboard while another user's status
page follows live, without a reload; a blocked page shows the reason escaped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from maintenance_guard import MaintenanceGuard
from maintenance_guard.inflight import InflightRegistry
from tests.e2e.chromium import require_chromium
from tests.e2e.flask_support import LiveServer, build_app, make_guard_for_app

XSS_REASON = '<script>window.__xss = 1</script><img src=x onerror="window.__xss=2"> DB upgrade'

pytestmark = pytest.mark.e2e

require_chromium()


def _status_page(browser: Any, base: str) -> Any:
    page = browser.new_context().new_page()
    page.goto(f"{base}/maintenance")
    page.wait_for_selector("body[data-mg-stream='open']")
    # A marker that a reload would wipe: proves the page updates in place.
    page.evaluate("window.__noReload = 'still here'")
    return page


def _admin_dashboard(browser: Any, base: str) -> Any:
    page = browser.new_context().new_page()
    page.goto(f"{base}/login/admin")
    page.goto(f"{base}/admin/maintenance")
    page.wait_for_selector("body[data-mg-stream='open']")
    page.on("dialog", lambda dialog: dialog.accept())
    return page


def _badge(page: Any) -> str:
    return str(page.locator("#mg-status [data-mg='badge']").inner_text())


def test_admin_switches_maintenance_on_and_off_while_status_page_follows_live(
    server: LiveServer,
    browser: Any,  # the browser closes first: no poll after the server
) -> None:
    watcher = _status_page(browser, server.url)
    assert _badge(watcher) == "All systems operational"
    admin = _admin_dashboard(browser, server.url)

    admin.fill("#mg-reason", XSS_REASON)
    admin.fill("#mg-duration", "30m")
    admin.click("#mg-enable")
    admin.wait_for_selector("#mg-result[data-ok='true']")

    watcher.wait_for_function(
        "document.querySelector(\"#mg-status [data-mg='badge']\").dataset.active === 'true'",
        timeout=10_000,
    )
    assert _badge(watcher) == "Maintenance in progress"
    assert watcher.locator("[data-mg='reason']").inner_text() == XSS_REASON
    assert "Caption generation" in watcher.locator("[data-mg='blocked_operations']").inner_text()
    assert watcher.locator("[data-mg='estimated_completion']").inner_text() != "not announced"
    assert watcher.evaluate("window.__noReload") == "still here"
    assert watcher.evaluate("window.__xss") is None
    # The admin's own dashboard follows too, with the admin-only field and the history.
    admin.wait_for_function(
        "document.querySelector(\"[data-mg='enabled_by']\").textContent === 'admin'"
    )
    admin.wait_for_selector("#mg-history td:text('enabled')")

    admin.fill("#mg-disable-reason", "done")
    admin.click("#mg-disable")
    watcher.wait_for_function(
        "document.querySelector(\"#mg-status [data-mg='badge']\").dataset.active === 'false'",
        timeout=10_000,
    )
    assert _badge(watcher) == "All systems operational"
    assert watcher.evaluate("window.__noReload") == "still here"
    assert (
        "every feature is available"
        in watcher.locator("[data-mg='blocked_operations']").inner_text()
    )


def test_blocked_page_shows_the_escaped_reason_and_what_is_still_possible(
    server: LiveServer,
    browser: Any,  # the browser closes first: no poll after the server
) -> None:
    admin = _admin_dashboard(browser, server.url)
    admin.fill("#mg-reason", XSS_REASON)
    admin.click("#mg-enable")
    admin.wait_for_selector("#mg-result[data-ok='true']")

    page = browser.new_context().new_page()
    response = page.goto(f"{server.url}/images/new")
    assert response.status == 503
    assert int(response.headers["retry-after"]) >= 1
    assert "Image upload and processing are temporarily unavailable" in page.inner_text(
        "#mg-refusal"
    )
    assert "Browse images you have already uploaded" in page.inner_text("#mg-alternatives")
    assert page.inner_text("[data-mg='reason']") == XSS_REASON
    assert page.evaluate("window.__xss") is None
    assert page.locator("#mg-status script, #mg-status img").count() == 0


def test_emergency_from_the_dashboard_reaches_the_status_page_and_bad_input_is_shown(
    server: LiveServer,
    browser: Any,  # the browser closes first: no poll after the server
) -> None:
    watcher = _status_page(browser, server.url)
    admin = _admin_dashboard(browser, server.url)

    admin.fill("#mg-reason", "   ")
    admin.click("#mg-enable")  # the browser's own "required" check lets spaces through
    admin.wait_for_selector("#mg-result[data-ok='false']")
    assert "reason must not be empty" in admin.inner_text("#mg-result")

    admin.fill("#mg-emergency-reason", "credential leak")
    admin.fill("#mg-grace", "0")
    admin.click("#mg-emergency")
    admin.wait_for_selector("#mg-result[data-ok='true']")
    watcher.wait_for_function(
        "document.querySelector(\"#mg-status [data-mg='badge']\").dataset.mode === 'emergency'",
        timeout=10_000,
    )
    assert watcher.locator("[data-mg='reason']").inner_text() == "credential leak"
    assert watcher.evaluate("window.__noReload") == "still here"


def test_status_page_falls_back_to_polling_when_streams_are_refused(
    browser: Any, make_guard: Callable[..., MaintenanceGuard]
) -> None:
    guard = make_guard_for_app(make_guard)
    with LiveServer(build_app(guard, SSE_MAX_CLIENTS=0)) as live:
        page = browser.new_context().new_page()
        page.goto(f"{live.url}/maintenance")
        page.wait_for_selector("body[data-mg-stream='polling']")
        page.evaluate("window.__noReload = 'still here'")
        make_guard().enable("normal", reason="polled")
        page.wait_for_function(
            "document.querySelector(\"[data-mg='reason']\").textContent === 'polled'",
            timeout=15_000,
        )
        assert page.evaluate("window.__noReload") == "still here"


def test_admin_pauses_and_resumes_a_queue_from_the_dashboard_and_sees_the_workers(
    server: LiveServer,
    browser: Any,
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    guard = make_guard()
    registry = InflightRegistry(guard.store)  # type: ignore[arg-type]
    registry.register_worker("w1@host", {"pid": 1, "queues": ["reports", "mail"], "paused": []})
    admin = _admin_dashboard(browser, server.url)
    assert "No queue is paused." in admin.locator("#mg-paused").inner_text()
    assert "reports, mail" in admin.locator("#mg-workers").inner_text()

    admin.fill("#mg-pause-queues", "reports, nightly")
    admin.fill("#mg-pause-for", "30m")
    admin.fill("#mg-pause-reason", "<b>reindex</b>")
    admin.check("#mg-pause-beat")
    admin.click("#mg-pause")
    admin.wait_for_selector("#mg-result[data-ok='true']")
    result = admin.locator("#mg-result").inner_text()
    assert "Paused: reports, nightly." in result and "consumes nightly" in result  # warning
    admin.wait_for_function(
        "document.querySelector('#mg-paused').innerText.includes('nightly')", timeout=10_000
    )
    table = admin.locator("#mg-paused").inner_text()
    assert "<b>reindex</b>" in table and "skips" in table  # escaped text, beat shown
    assert [p.queue for p in guard.refresh().pauses(guard.now())] == ["reports", "nightly"]

    admin.fill("#mg-pause-queues", "bad name")
    admin.fill("#mg-pause-reason", "x")
    admin.click("#mg-pause")
    admin.wait_for_selector("#mg-result[data-ok='false']")
    assert "invalid queue name" in admin.locator("#mg-result").inner_text()

    admin.fill("#mg-resume-queues", "")
    admin.click("#mg-resume")
    admin.wait_for_function(
        "document.querySelector('#mg-result').innerText.includes('Resumed: reports, nightly')",
        timeout=10_000,
    )
    admin.wait_for_function(
        "document.querySelector('#mg-paused').innerText.includes('No queue is paused.')",
        timeout=10_000,
    )
    assert guard.refresh().paused_queues == ()
    registry.unregister_worker("w1@host")


def test_admin_schedules_cancels_and_posts_updates_from_the_dashboard(
    server: LiveServer,
    browser: Any,
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    guard = make_guard()
    admin = _admin_dashboard(browser, server.url)
    assert "Nothing is scheduled." in admin.locator("#mg-windows").inner_text()
    # 60 days ahead at 02:00, written as the browser's local time.
    day = admin.evaluate(
        "(() => { const d = new Date(Date.now() + 60 * 86400e3);"
        " const p = n => String(n).padStart(2, '0');"
        " return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()); })()"
    )
    admin.fill("#mg-schedule-at", f"{day}T02:00")
    admin.fill("#mg-schedule-duration", "1h")
    admin.fill("#mg-schedule-reason", "DB upgrade")
    admin.fill("#mg-schedule-notice", "24h")
    admin.click("#mg-schedule")
    admin.wait_for_selector("#mg-result[data-ok='true']")
    (window,) = guard.windows.list()
    local = admin.evaluate(f"new Date('{day}T02:00').getTime() / 1000")
    assert window.start_at == local and window.duration == 3600 and window.notice == 86400
    assert window.id in admin.locator("#mg-windows").inner_text()

    admin.fill("#mg-schedule-at", f"{day}T02:30")  # overlaps: refused, shown
    admin.click("#mg-schedule")
    admin.wait_for_selector("#mg-result[data-ok='false']")
    assert "overlaps window" in admin.locator("#mg-result").inner_text()

    admin.click(f"#mg-windows button[data-window='{window.id}']")
    admin.wait_for_function(
        "document.querySelector('#mg-windows').innerText.includes('Nothing is scheduled.')"
    )
    assert guard.windows.list() == ()

    admin.fill("#mg-update-text", "Migration 60% done")
    admin.click("#mg-update")
    admin.wait_for_selector("#mg-result[data-ok='false']")  # maintenance is off
    guard.enable("normal", reason="migration", by="admin")
    admin.click("#mg-update")
    admin.wait_for_function("document.querySelector('#mg-result').innerText === 'Update posted.'")
    assert [u.text for u in guard.refresh().updates] == ["Migration 60% done"]
