"""Every page of the packaged demo app in chromium, in each mode and across live changes.

The demo web app runs in-process on a real threaded server with a real Celery app (Redis
broker, guard installed). Screenshots go to ``$MG_TEST_ARTEFACTS`` when set, else to the
test's own tmp_path; each test prints where.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from maintenance_guard import MaintenanceGuard
from maintenance_guard.celery import install
from maintenance_guard.demo.tasks import define_tasks
from maintenance_guard.demo.web import create_app
from tests.e2e.chromium import require_chromium
from tests.e2e.flask_support import LiveServer, SSEReader
from tests.integration import celery_support
from tests.integration.celery_support import Broker, new_queue, uninstall

pytestmark = pytest.mark.e2e

require_chromium()

redis_broker = celery_support.redis_broker

MODES = ("off", "normal", "emergency", "test")
DURATION = 1756  # "try again in about 29 minutes"
RAW_NAMES = re.compile(r"\b[a-z]+_[a-z_]+\b")  # caption_generation, user_data_modification
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")
EMERGENCY_TEXT = "Everything except this status page is unavailable"


@pytest.fixture
def artefacts(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    root = os.environ.get("MG_TEST_ARTEFACTS")
    where = Path(root) / request.node.name if root else tmp_path / "screenshots"
    where.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {where}")
    return where


@pytest.fixture
def demo(
    make_guard: Callable[..., MaintenanceGuard],
    redis_broker: Broker,
    redis_url: str,
    key_prefix: str,
) -> Iterator[tuple[LiveServer, MaintenanceGuard]]:
    """The demo web app on a Celery app with the guard installed, served over HTTP."""
    guard = make_guard()
    celery = Celery("mg-e2e-demo", set_as_current=False)
    celery.conf.update(
        broker_url=redis_broker.url,
        task_default_queue=new_queue(redis_broker),
        broker_connection_retry_on_startup=True,
        maintenance_guard_key_prefix=key_prefix,
        maintenance_guard_redis_url=redis_url,
    )
    install(celery, guard)
    tasks = define_tasks(celery)
    try:
        with LiveServer(create_app(celery, guard, tasks)) as live:
            yield live, guard
    finally:
        uninstall(celery)


def switch(guard: MaintenanceGuard, mode: str) -> None:
    if mode == "off":
        guard.disable(by="e2e")
    else:
        guard.enable(mode, reason="Database upgrade", duration=DURATION, by="e2e")


def new_page(browser: Any, base: str, *, admin: bool = False) -> Any:
    # A timezone other than the server's UTC: local times must really be local.
    page = browser.new_context(timezone_id="America/New_York", locale="en-US").new_page()
    if admin:
        page.goto(f"{base}/login")
        page.fill("input[name=user]", "admin")
        page.click("button[type=submit]")
    return page


def badge(page: Any) -> Any:
    return page.locator("#mg-status [data-mg='badge']")


def check_status_fields(page: Any, mode: str) -> None:
    """What every page with the status block must show in ``mode``."""
    assert badge(page).get_attribute("data-mode") == mode
    block = page.inner_text("#mg-status")
    assert not RAW_NAMES.findall(block), RAW_NAMES.findall(block)
    assert not ISO.search(block), "an ISO time is shown as text"
    if mode != "off":
        started = page.locator("[data-mg='started_at']")
        assert ISO.match(started.get_attribute("title") or "")
        assert "UTC" not in started.inner_text()  # localised, not the server's UTC text
    if mode == "normal":
        assert "Caption generation" in page.inner_text("[data-mg='blocked_operations']")


def wait_mode(page: Any, mode: str) -> None:
    page.wait_for_function(
        "m => document.querySelector(\"#mg-status [data-mg='badge']\").dataset.mode === m",
        arg=mode,
        timeout=10_000,
    )


def test_every_page_in_every_mode(
    browser: Any, demo: tuple[LiveServer, MaintenanceGuard], artefacts: Path
) -> None:
    live, guard = demo
    colours: dict[str, str] = {}
    for mode in MODES:
        switch(guard, mode)
        blocks_reads = mode == "emergency"
        blocks_work = mode in ("normal", "emergency")

        # The status page.
        page = new_page(browser, live.url)
        assert page.goto(f"{live.url}/maintenance").status == 200
        page.wait_for_selector("body[data-mg-stream='open']")
        check_status_fields(page, mode)
        colours[mode] = badge(page).evaluate("el => getComputedStyle(el).backgroundColor")
        text = page.inner_text("main")
        assert "This page is temporarily unavailable" not in text
        impact = page.locator("#mg-impact")
        if mode == "normal":
            assert impact.is_visible()
            assert "Caption generation is temporarily unavailable" in impact.inner_text()
        elif mode == "emergency":
            assert impact.is_visible() and EMERGENCY_TEXT in impact.inner_text()
        else:
            assert not impact.is_visible()
        page.screenshot(path=str(artefacts / f"{mode}-status.png"), full_page=True)

        # The home page, and "Submit work" as a browser user does it.
        response = page.goto(f"{live.url}/")
        assert response.status == (503 if blocks_reads else 200)
        page.screenshot(path=str(artefacts / f"{mode}-home.png"), full_page=True)
        if blocks_reads:
            refusal = re.sub(r"\s+", " ", page.inner_text("main"))
            assert f"try again in about {round(DURATION / 60)} minutes" in refusal
            check_status_fields(page, mode)
        else:
            with page.expect_navigation() as navigation:
                page.click("button:text('Generate a caption')")
            assert navigation.value.status == (503 if blocks_work else 202)
            assert "html" in navigation.value.headers["content-type"]
            heading = page.inner_text("h1")
            assert heading == ("Temporarily unavailable" if blocks_work else "Submitted")
            if blocks_work:
                assert "Caption generation is temporarily unavailable" in page.inner_text(
                    "#mg-refusal"
                )
                assert page.inner_text("#mg-retry-after") == "29 minutes"
                check_status_fields(page, mode)
            page.screenshot(path=str(artefacts / f"{mode}-submit-work.png"), full_page=True)

        # The dashboard: 403 with a sign-in link for others, the dashboard for the admin.
        response = page.goto(f"{live.url}/admin/maintenance")
        assert response.status == 403
        assert page.get_attribute("#mg-login", "href").startswith("/login?next=")
        page.screenshot(path=str(artefacts / f"{mode}-dashboard-forbidden.png"), full_page=True)
        admin = new_page(browser, live.url, admin=True)
        assert admin.goto(f"{live.url}/admin/maintenance").status == 200
        admin.wait_for_selector("body[data-mg-stream='open']")
        check_status_fields(admin, mode)
        labels = admin.inner_text("#mg-enable-form fieldset")
        assert "Caption generation" in labels and not RAW_NAMES.findall(labels)
        admin.screenshot(path=str(artefacts / f"{mode}-dashboard.png"), full_page=True)
        page.context.close()
        admin.context.close()
    assert len({colours["off"], colours["normal"], colours["emergency"], colours["test"]}) == 4


def test_the_status_page_follows_every_live_transition(
    browser: Any, demo: tuple[LiveServer, MaintenanceGuard], artefacts: Path
) -> None:
    live, guard = demo
    page = new_page(browser, live.url)
    page.goto(f"{live.url}/maintenance")
    page.wait_for_selector("body[data-mg-stream='open']")
    page.evaluate("window.__noReload = 'still here'")
    impact = page.locator("#mg-impact")
    assert not impact.is_visible()
    # off -> normal -> off -> normal (from off again) -> emergency -> test -> off
    for step, mode in enumerate(["normal", "off", "normal", "emergency", "test", "off"]):
        switch(guard, mode)
        wait_mode(page, mode)
        check_status_fields(page, mode)
        text = page.inner_text("main")
        assert "This page is temporarily unavailable" not in text
        if mode == "normal":
            page.wait_for_selector("#mg-impact:not([hidden])")
            assert "Caption generation is temporarily unavailable" in impact.inner_text()
        elif mode == "emergency":
            assert impact.is_visible() and EMERGENCY_TEXT in impact.inner_text()
        else:
            assert not impact.is_visible()
        page.screenshot(path=str(artefacts / f"live-{step}-{mode}.png"), full_page=True)
    assert page.evaluate("window.__noReload") == "still here"


def test_a_refused_browser_page_says_when_maintenance_is_over(
    browser: Any, demo: tuple[LiveServer, MaintenanceGuard], artefacts: Path
) -> None:
    live, guard = demo
    switch(guard, "normal")
    page = new_page(browser, live.url)
    page.goto(f"{live.url}/")
    with page.expect_navigation() as navigation:
        page.click("button:text('Create a job')")
    assert navigation.value.status == 503
    assert "New jobs cannot be started" in page.inner_text("#mg-refusal")
    page.wait_for_selector("body[data-mg-stream='open']")
    assert not page.locator("#mg-over").is_visible()
    switch(guard, "off")
    page.wait_for_selector("#mg-over:not([hidden])", timeout=10_000)
    page.screenshot(path=str(artefacts / "refused-then-over.png"), full_page=True)


def test_the_sign_in_link_of_the_forbidden_dashboard_leads_back_to_the_dashboard(
    browser: Any, demo: tuple[LiveServer, MaintenanceGuard]
) -> None:
    live, _ = demo
    page = new_page(browser, live.url)
    assert page.goto(f"{live.url}/admin/maintenance").status == 403
    page.click("#mg-login")
    page.fill("input[name=user]", "admin")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url == f"{live.url}/admin/maintenance"
    assert page.inner_text("h1") == "Maintenance dashboard"


def test_with_the_default_stream_cap_taken_the_page_polls_and_still_updates(
    browser: Any, demo: tuple[LiveServer, MaintenanceGuard], artefacts: Path
) -> None:
    live, guard = demo
    held = [SSEReader(f"{live.url}/api/maintenance/stream") for _ in range(8)]
    try:
        assert all(" 200 " in r.status_line for r in held)
        extra = SSEReader(f"{live.url}/api/maintenance/stream")
        assert " 429 " in extra.status_line
        extra.close()
        page = new_page(browser, live.url)
        page.goto(f"{live.url}/maintenance")
        page.wait_for_selector("body[data-mg-stream='polling']")
        switch(guard, "normal")
        wait_mode(page, "normal")  # within one 5 s poll
        page.wait_for_selector("#mg-impact:not([hidden])")
        page.screenshot(path=str(artefacts / "polling-normal.png"), full_page=True)
    finally:
        for reader in held:
            reader.close()


def test_the_banner_on_the_demo_home_page_counts_down_shows_the_window_and_says_it_ended(
    demo: tuple[LiveServer, MaintenanceGuard], browser: Any, artefacts: Path
) -> None:
    import time

    from maintenance_guard.windows import iso_z

    live, guard = demo
    guard.start()  # this process's watcher starts the window on time
    # Nothing scheduled: the page loads the cached script and nothing else of ours.
    quiet = new_page(browser, live.url)
    requests: list[str] = []
    quiet.on("request", lambda r: requests.append(r.url))
    quiet.goto(f"{live.url}/")
    quiet.wait_for_function("document.documentElement.dataset.mgBanner === 'none'")
    paths = ["/" + u.split("/", 3)[3] for u in requests]
    ours = [p for p in paths if p.startswith(("/maintenance", "/api/"))]
    assert ours == ["/maintenance/banner.js"], paths
    assert quiet.locator("#mg-banner").count() == 0

    start = int(time.time()) + 6
    guard.windows.add(iso_z(start), 30, reason="Database <b>upgrade</b>", auto_end=False, by="e2e")
    page = new_page(browser, live.url)
    page.goto(f"{live.url}/")
    banner = page.locator("#mg-banner")
    page.wait_for_selector("#mg-banner[data-kind='upcoming']")
    text = banner.inner_text()
    assert "Scheduled maintenance" in text and "Database <b>upgrade</b>" in text  # escaped
    assert "Caption generation" in text and "Starts in 0m" in text
    assert (
        banner.get_attribute("role") == "status" and banner.get_attribute("aria-live") == "polite"
    )
    page.screenshot(path=str(artefacts / "banner-upcoming.png"))
    first = page.locator("[data-mg-banner='countdown']").inner_text()
    page.wait_for_timeout(1200)
    assert page.locator("[data-mg-banner='countdown']").inner_text() != first  # it ticks

    page.wait_for_selector("#mg-banner[data-kind='active']", timeout=15_000)  # the window opened
    assert "Maintenance in progress: Database <b>upgrade</b>" in banner.inner_text()
    assert "Unavailable: Caption generation" in banner.inner_text()
    page.screenshot(path=str(artefacts / "banner-active.png"))
    started = guard.current().started_at
    assert started is not None and started >= start

    other = new_page(browser, live.url)
    other.goto(f"{live.url}/")
    other.wait_for_selector("#mg-banner[data-kind='active']")
    other.click("#mg-banner button")
    assert other.locator("#mg-banner").is_hidden()
    other.reload()
    other.wait_for_function("document.documentElement.dataset.mgBanner === 'active'")
    assert other.locator("#mg-banner").is_hidden()  # dismissed for this window

    guard.disable(by="e2e")
    page.wait_for_selector("#mg-banner[data-kind='ended']", timeout=10_000)
    assert "Maintenance has ended" in banner.inner_text()
    page.screenshot(path=str(artefacts / "banner-ended.png"))


def test_progress_updates_appear_live_on_the_status_page(
    demo: tuple[LiveServer, MaintenanceGuard], browser: Any, artefacts: Path
) -> None:
    live, guard = demo
    guard.enable("normal", reason="Migration", by="e2e")
    page = new_page(browser, live.url)
    page.goto(f"{live.url}/maintenance")
    page.wait_for_selector("body[data-mg-stream='open']")
    guard.post_update("Migration 60% done <script>", by="e2e")
    page.wait_for_function(
        "document.querySelector(\"[data-mg='updates']\").innerText.includes('60% done <script>')"
    )
    guard.post_update("Migration 90% done", by="e2e")
    page.wait_for_function("document.querySelectorAll(\"[data-mg='updates'] li\").length === 2")
    page.screenshot(path=str(artefacts / "status-updates.png"), full_page=True)
