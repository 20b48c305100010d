"""The dashboard's "Impact" section in a real browser (Debian's chromium through
Playwright) on the real server: the numbers of the window under way and its inline SVG
chart, redrawn in place when the window ends, text escaped, nothing loaded from elsewhere.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from maintenance_guard import MaintenanceGuard
from tests.e2e.chromium import require_chromium
from tests.e2e.flask_support import LiveServer

XSS_REASON = '<img src=x onerror="window.__xss=1"> index rebuild'

pytestmark = pytest.mark.e2e

require_chromium()


def refused_as(base: str, user: str | None, times: int = 1) -> None:
    http = requests.Session()
    if user is not None:
        http.get(f"{base}/login/{user}", timeout=5)
    for _ in range(times):
        assert http.post(f"{base}/api/jobs", timeout=5).status_code == 503


def _impact(page: Any, name: str) -> str:
    return str(page.locator(f"[data-mg-impact='{name}']").inner_text())


def test_dashboard_shows_the_window_impact_with_an_inline_chart_and_redraws_it(
    server: LiveServer,
    app_guard: MaintenanceGuard,
    browser: Any,  # the browser closes first: no poll after the server
) -> None:
    base = server.url
    app_guard.enable("normal", reason=XSS_REASON, by="ops")
    refused_as(base, "alice", 2)
    refused_as(base, "bob")
    refused_as(base, None)
    app_guard.flush()

    page = browser.new_context().new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(f"{base}/login/admin")
    page.goto(f"{base}/admin/maintenance")
    page.wait_for_selector("body[data-mg-stream='open']")
    page.on("dialog", lambda dialog: dialog.accept())

    section = page.locator("#mg-impact")
    assert "Maintenance window under way (normal)" in section.inner_text()
    assert XSS_REASON in page.locator("#mg-impact-window").inner_text()
    assert _impact(page, "refused_total") == "4"
    assert _impact(page, "distinct_users") == "2"
    assert _impact(page, "refused_without_user") == "1"
    assert _impact(page, "jobs_finished") == "0"
    assert _impact(page, "sessions") == "unknown"  # cookie sessions: nothing to count
    rows = page.locator("#mg-impact-refused tbody").inner_text()
    assert "refused\tjob_creation\thttp\t4" in rows
    chart = page.locator("#mg-impact-chart")
    assert chart.evaluate("svg => svg.namespaceURI") == "http://www.w3.org/2000/svg"
    points = str(page.locator("#mg-impact-chart polyline").get_attribute("points"))
    assert points.split()[-1].endswith(",0")  # this minute is the peak: drawn at the top
    assert "peak 4" in page.locator("#mg-impact-chart-caption").inner_text()

    # A refusal meanwhile, then the admin ends the window: the section is redrawn in
    # place from the overview (no reload), as the last window, ended.
    refused_as(base, "carol")
    page.evaluate("window.__noReload = 'still here'")
    page.fill("#mg-disable-reason", "done")
    page.click("#mg-disable")
    page.wait_for_function(
        "document.getElementById('mg-impact-window').textContent"
        ".startsWith('Last maintenance window')",
        timeout=15_000,
    )
    page.wait_for_function(
        "document.querySelector(\"[data-mg-impact='refused_total']\").textContent === '5'",
        timeout=15_000,
    )
    assert _impact(page, "distinct_users") == "3"
    assert "peak 5" in page.locator("#mg-impact-chart-caption").inner_text()
    redrawn = str(page.locator("#mg-impact-chart polyline").get_attribute("points"))
    assert redrawn and redrawn.split()[0].startswith("0,")
    assert ", ended " in page.locator("#mg-impact-window").inner_text()
    assert XSS_REASON in page.locator("#mg-impact-window").inner_text()
    assert page.evaluate("window.__noReload") == "still here"
    assert page.evaluate("window.__xss") is None
    assert page.locator("#mg-impact img, #mg-impact script").count() == 0
    # No CDN, no external asset: every request went to this server.
    assert requested and all(url.startswith(base) for url in requested)
