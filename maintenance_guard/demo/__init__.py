"""The demo app `maintenance-guard demo` runs: a Celery app, its tasks and a Flask app.

It ships in the wheel, so the demo works from any directory. Its pieces are built by
functions, so nothing connects anywhere at import time:

- `config.celery_config` reads the environment (``CELERY_BROKER_URL``,
  ``MAINTENANCE_GUARD_REDIS_URL``, else the embedded redis-server);
- `tasks.define_tasks` registers one task per operation type on a Celery app;
- `web.create_app` builds the web app (one page per kind of work, a toy sign-in);
- `worker` is the module ``celery -A maintenance_guard.demo.worker worker`` runs.

The repository's own example app (``workers/``, ``celeryconfig.py``) is the same idea
written as a user would lay it out; it is not part of the wheel.
"""
