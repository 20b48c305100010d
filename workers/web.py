"""The example Flask app: the packaged demo's web app on this repository's Celery app.

``flask --app workers.web run`` serves it; `maintenance_guard.demo.web` holds the code
(pages per kind of work, HTML forms, a toy sign-in where ``admin`` is the administrator).
"""

from __future__ import annotations

from maintenance_guard.demo.web import create_app

from . import app as celery_app
from . import guard, tasks

app = create_app(celery_app, guard, tasks)
