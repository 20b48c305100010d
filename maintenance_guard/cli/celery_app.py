"""The `--app` option: load the operator's Celery app named ``module:attribute``."""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import InvalidInput

APP_HELP = (
    "The Celery app, module:attribute (env MAINTENANCE_GUARD_CELERY_APP), "
    "e.g. workers:app. Without it workers are neither paused nor revoked."
)


def load_celery_app(spec: str | None) -> Any:
    """Import the Celery app named ``module:attribute`` (or a module with ``app``/``celery``).

    Raises `InvalidInput` (one line) for a malformed name, a module that cannot be
    imported or raises while importing, and a name that is not a Celery app.
    """
    if not spec:
        return None
    # Deferred: Celery is imported only when a command is given an app to load.
    from celery.utils.imports import cwd_in_path

    module_name, _, attribute = spec.strip().partition(":")
    names_ok = all(part.isidentifier() for part in module_name.split("."))
    if not names_ok or not (attribute == "" or attribute.isidentifier()):
        raise InvalidInput(f"--app {spec!r} is not module:attribute (e.g. workers:app)")
    try:
        with cwd_in_path():  # as `celery -A` does: the app of the project you are in
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(f"cannot import the Celery app module {module_name!r}: {exc}") from None
    except (Exception, SystemExit) as exc:
        raise InvalidInput(
            f"the Celery app module {module_name!r} failed while importing: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    for name in [attribute] if attribute else ["app", "celery"]:
        found = getattr(module, name, None)
        if found is not None and hasattr(found, "control"):
            return found
    raise InvalidInput(f"{spec!r} does not name a Celery app")
