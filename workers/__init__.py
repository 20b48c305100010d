"""The example Celery app: ``celery -A workers worker`` runs it with the guard installed.

``app`` is configured from the top-level ``celeryconfig.py``; ``guard`` is the
`MaintenanceGuard` it uses. Importing this package needs Celery, not Flask.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from celery import Celery

from maintenance_guard import MaintenanceGuard
from maintenance_guard.celery import install


def _load_config() -> ModuleType:
    try:
        import celeryconfig

        return celeryconfig
    except ImportError:
        # Run from another directory: use the file that ships next to this package.
        path = Path(__file__).resolve().parent.parent / "celeryconfig.py"
        spec = importlib.util.spec_from_file_location("celeryconfig", path)
        if spec is None or spec.loader is None:
            raise
        module = importlib.util.module_from_spec(spec)
        sys.modules["celeryconfig"] = module
        spec.loader.exec_module(module)
        return module


app = Celery("workers")
app.config_from_object(_load_config())
guard: MaintenanceGuard = install(app)

from . import tasks  # noqa: E402  (registers the tasks on `app`)

__all__ = ["app", "guard", "tasks"]
