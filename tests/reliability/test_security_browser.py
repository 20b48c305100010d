"""A hostile reason arriving live (Server-Sent Events) in a real browser runs no script.

The status page and the admin dashboard are open in chromium when an admin sets a reason
full of markup through the API; both pages update in place and show it as text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from maintenance_guard import MaintenanceGuard
from tests.e2e.chromium import launched_chromium, require_chromium
from tests.e2e.flask_support import LiveServer, build_app, make_guard_for_app
from tests.reliability.web import Browser

HOSTILE = (
    '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
    '<svg onload="window.__xss=3"></svg>"\'><iframe src=javascript:window.__xss=4>'
)

pytestmark = pytest.mark.e2e
require_chromium()


@pytest.fixture
def browser() -> Iterator[Any]:
    with launched_chromium() as launched:
        yield launched


@pytest.fixture
def server(make_guard: Callable[..., MaintenanceGuard]) -> Iterator[LiveServer]:
    with LiveServer(build_app(make_guard_for_app(make_guard))) as live:
        yield live


def open_page(browser: Any, url: str, login: str | None = None) -> Any:
    page = browser.new_context().new_page()
    if login:
        page.goto(f"{url}/login/{login}")
    page.goto(url + ("/admin/maintenance" if login == "admin" else "/maintenance"))
    page.wait_for_selector("body[data-mg-stream='open']")
    page.evaluate("window.__loaded = 'same page'")  # gone if the page reloads
    return page


def test_hostile_reason_pushed_over_the_stream_is_shown_as_text_and_never_runs(
    server: LiveServer, browser: Any
) -> None:
    # The server first, the browser second: the browser closes first, so no page keeps
    # polling through a kept-alive connection (which outlives the server's shutdown)
    # and makes the stopped guard write its state back after the test's cleanup.
    status_page = open_page(browser, server.url)
    dashboard = open_page(browser, server.url, login="admin")
    operator = Browser(server.url)
    token = operator.login_admin()
    code, _, body = operator.post(
        "/api/maintenance/enable",
        {"mode": "normal", "reason": HOSTILE, "duration": 600},
        headers={"X-CSRF-Token": token},
    )
    assert code == 200, body
    for page in (status_page, dashboard):
        page.wait_for_function(
            "text => document.body.innerText.includes(text)", arg=HOSTILE, timeout=10_000
        )
        assert page.evaluate("window.__loaded") == "same page"  # updated live, no reload
        assert page.evaluate("window.__xss") is None
        injected = page.locator(
            "#mg-status script, #mg-status img, #mg-status svg, #mg-status iframe, "
            "[data-mg] script, [data-mg] img, [data-mg] svg, [data-mg] iframe"
        )
        assert injected.count() == 0
