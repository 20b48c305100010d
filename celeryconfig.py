"""Celery configuration of the example app (`celery -A workers worker`).

The broker is ``$CELERY_BROKER_URL``; else the Redis of ``$MAINTENANCE_GUARD_REDIS_URL``
(``unix://`` URLs converted to kombu's ``redis+socket://``); else the embedded redis-server
that maintenance-guard starts when nothing is configured. Guard settings are the
``maintenance_guard_*`` keys below (any `GuardSettings` field).
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlparse


def _broker_from_redis_url(url: str) -> str:
    if url.startswith("unix://"):
        parsed = urlparse(url)
        db = (parse_qs(parsed.query).get("db") or ["0"])[0]
        return f"redis+socket://{parsed.path}?virtual_host={db}"
    return url


def _default_broker() -> str:
    if os.environ.get("CELERY_BROKER_URL"):
        return os.environ["CELERY_BROKER_URL"]
    if os.environ.get("MAINTENANCE_GUARD_REDIS_URL"):
        return _broker_from_redis_url(os.environ["MAINTENANCE_GUARD_REDIS_URL"])
    from maintenance_guard.embedded import broker_url, ensure_running

    ensure_running()
    return broker_url()


broker_url = _default_broker()
_is_redis_broker = broker_url.startswith(("redis", "rediss"))
result_backend = os.environ.get("CELERY_RESULT_BACKEND") or (
    broker_url if _is_redis_broker else "rpc://"
)
broker_connection_retry_on_startup = True
task_serializer = "json"
accept_content = ["json"]
result_serializer = "json"
result_expires = 3600
task_default_queue = os.environ.get("WORKERS_QUEUE", "celery")
worker_prefetch_multiplier = 1
task_acks_late = False

# --- maintenance-guard -------------------------------------------------------------
maintenance_guard_redis_url = os.environ.get("MAINTENANCE_GUARD_REDIS_URL") or None
maintenance_guard_key_prefix = os.environ.get("MAINTENANCE_GUARD_KEY_PREFIX", "maintenance_guard")
# Task-name glob -> operation, first match wins. Tasks with base=GuardedTask declare
# their operation themselves; these patterns classify every other task, including
# tasks sent by name from code that does not know about the guard.
maintenance_guard_task_operations = {
    "workers.tasks.create_job": "job_creation",
    "workers.tasks.sync_platform*": "platform_operations",
    "workers.tasks.run_batch": "batch_operations",
    "workers.tasks.update_user_*": "user_data_modification",
    "workers.tasks.fetch_*": "read",
}
# What a worker does with a message published during maintenance by a producer without
# the guard: "defer" (park in Redis, replay after maintenance) or "reject".
maintenance_guard_worker_policy = "defer"
maintenance_guard_heartbeat_interval = 5.0
maintenance_guard_heartbeat_timeout = 30.0
