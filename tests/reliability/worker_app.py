"""Worker entry point for the reliability suite: the Celery test app of
`tests.integration.celery_support`, plus ``task_acks_late`` when ``MG_REL_ACKS_LATE=1``.

Run as ``celery -A tests.reliability.worker_app worker`` with the ``MG_WORKER_*``
environment that `tests.integration.celery_support.start_worker` documents.
"""

from __future__ import annotations

import os

from tests.integration.celery_support import app

if os.environ.get("MG_REL_ACKS_LATE") == "1":
    # Ack after the task: a worker killed mid-task leaves the message to the broker, which
    # redelivers it to the next worker.
    app.conf.task_acks_late = True

__all__ = ["app"]
