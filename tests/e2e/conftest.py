"""Fixtures of the browser tests: Debian's chromium, and the example app on a live server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from maintenance_guard import MaintenanceGuard
from tests.e2e.chromium import launched_chromium
from tests.e2e.flask_support import LiveServer, build_app, make_guard_for_app


@pytest.fixture
def browser() -> Iterator[Any]:
    """Chromium through Playwright; closed after the test."""
    with launched_chromium() as launched:
        yield launched


@pytest.fixture
def app_guard(make_guard: Callable[..., MaintenanceGuard]) -> MaintenanceGuard:
    """The guard of the example app (its operations mapped), on the test's prefix."""
    return make_guard_for_app(make_guard)


@pytest.fixture
def server(app_guard: MaintenanceGuard) -> Iterator[LiveServer]:
    """The example app with ``app_guard``, served over real HTTP."""
    with LiveServer(build_app(app_guard)) as live:
        yield live
