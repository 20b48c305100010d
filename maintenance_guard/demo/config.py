"""The demo's Celery configuration, from the environment (see `celery_config`)."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, urlparse

from ..embedded import broker_url, ensure_running

# Task-name glob -> operation. The two GuardedTask tasks declare theirs themselves.
TASK_OPERATIONS = {
    "demo.create_job": "job_creation",
    "demo.sync_platform": "platform_operations",
    "demo.run_batch": "batch_operations",
    "demo.update_user_profile": "user_data_modification",
    "demo.fetch_report": "read",
}


def broker_from_redis_url(url: str) -> str:
    """kombu's spelling of a Redis URL (``unix://`` becomes ``redis+socket://``)."""
    if url.startswith("unix://"):
        parsed = urlparse(url)
        db = (parse_qs(parsed.query).get("db") or ["0"])[0]
        return f"redis+socket://{parsed.path}?virtual_host={db}"
    return url


def _broker() -> str:
    if os.environ.get("CELERY_BROKER_URL"):
        return os.environ["CELERY_BROKER_URL"]
    if os.environ.get("MAINTENANCE_GUARD_REDIS_URL"):
        return broker_from_redis_url(os.environ["MAINTENANCE_GUARD_REDIS_URL"])
    ensure_running()
    return broker_url()


def celery_config() -> dict[str, Any]:
    """Celery settings plus the guard's ``maintenance_guard_*`` keys.

    The broker is ``$CELERY_BROKER_URL``, else the Redis of ``$MAINTENANCE_GUARD_REDIS_URL``,
    else the embedded redis-server (started if needed).
    """
    broker = _broker()
    backend = os.environ.get("CELERY_RESULT_BACKEND") or (
        broker if broker.startswith(("redis", "rediss")) else "rpc://"
    )
    return {
        "broker_url": broker,
        "result_backend": backend,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_expires": 3600,
        "task_default_queue": os.environ.get("MAINTENANCE_GUARD_DEMO_QUEUE", "demo"),
        "worker_prefetch_multiplier": 1,
        "maintenance_guard_redis_url": os.environ.get("MAINTENANCE_GUARD_REDIS_URL") or None,
        "maintenance_guard_key_prefix": os.environ.get(
            "MAINTENANCE_GUARD_KEY_PREFIX", "maintenance_guard"
        ),
        "maintenance_guard_task_operations": dict(TASK_OPERATIONS),
        "maintenance_guard_worker_policy": "defer",
    }
