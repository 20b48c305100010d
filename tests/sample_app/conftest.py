"""How an application's conftest guards pytest-celery's app and worker: install the
guard from the plugin's ``maintenance_guard`` fixture on the ``celery_app`` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery.contrib.pytest import celery_worker  # noqa: F401
from flask.testing import FlaskClient

from maintenance_guard import MaintenanceGuard
from maintenance_guard.celery import install, uninstall

from .shop import create_web

# pytest-celery >= 1.0 also defines a Docker-based ``celery_worker`` that hides Celery's
# in-process one (celery/pytest-celery#442); the import above brings the in-process
# worker back for this directory.


@pytest.fixture
def celery_app(celery_app: Any, maintenance_guard: MaintenanceGuard) -> Iterator[Any]:
    celery_app.set_current()  # the shop's shared tasks use the test app (restored after)
    install(celery_app, maintenance_guard)
    yield celery_app
    uninstall(celery_app)


@pytest.fixture
def web(celery_app: Any, maintenance_guard: MaintenanceGuard) -> FlaskClient:
    return create_web(maintenance_guard).test_client()
