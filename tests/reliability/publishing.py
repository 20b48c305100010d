"""A minimal guarded Celery producer on the real RabbitMQ, and the broker's own queue length.

Only `maintenance_guard.celery.install` (the public adapter API) is used, so the
reliability suite checks what a user's producer sees. No worker consumes these queues:
every message a test publishes stays countable on the broker until the queue is deleted.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from celery import Celery
from kombu import Connection

from maintenance_guard import MaintenanceGuard
from tests.cleanup import AMQP_URL, amqp_available, delete_amqp_queues

# Task names the producers publish, and the operations they map to.
TASK_OPERATIONS = {
    "rel.caption": "caption_generation",
    "rel.job": "job_creation",
    "rel.read": "read",
}


def queue_length(queue: str) -> int:
    """Messages waiting in ``queue``, read from RabbitMQ itself (0 if never declared)."""
    with Connection(AMQP_URL) as conn:
        channel = conn.channel()
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except conn.channel_errors:
            return 0
        finally:
            try:
                channel.close()
            except Exception:
                pass


def delete_queue(queue: str) -> None:
    """Delete ``queue`` and its exchange on RabbitMQ."""
    delete_amqp_queues([queue], AMQP_URL)


@contextmanager
def guarded_producer(guard: MaintenanceGuard) -> Iterator[tuple[Celery, str]]:
    """A Celery app with ``guard`` installed, publishing to a fresh queue (deleted after).

    ``guard`` must map the `TASK_OPERATIONS` names (``task_operations=TASK_OPERATIONS``).
    """
    if not amqp_available():
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    from maintenance_guard.celery import install

    queue = f"mg-rel-{uuid.uuid4().hex[:10]}"
    app = Celery(f"rel-{queue}", broker=AMQP_URL, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_serializer="json",
        broker_connection_retry_on_startup=True,
        broker_pool_limit=16,
    )
    install(app, guard)
    try:
        yield app, queue
    finally:
        # Not app.pool.force_close_all(): kombu keeps producer pools per broker URL for the
        # whole process, and the next app on the same URL would get a closed pool.
        delete_queue(queue)
