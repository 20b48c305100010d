"""The demo's Celery app, for ``celery -A maintenance_guard.demo.worker worker``.

Importing this module reads the environment and may start the embedded redis-server
(see `maintenance_guard.demo.config.celery_config`).
"""

from __future__ import annotations

from celery import Celery

from ..celery import install
from ..guard import MaintenanceGuard
from .config import celery_config
from .tasks import define_tasks


def make_celery() -> tuple[Celery, MaintenanceGuard]:
    """The demo Celery app with the guard installed and the tasks registered."""
    celery = Celery("maintenance_guard.demo")
    celery.conf.update(celery_config())
    guard = install(celery)
    celery.demo_tasks = define_tasks(celery)
    return celery, guard


app, guard = make_celery()
tasks = app.demo_tasks

__all__ = ["app", "guard", "make_celery", "tasks"]
