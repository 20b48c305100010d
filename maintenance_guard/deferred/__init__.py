"""Deferred submissions: work parked in Redis during maintenance and replayed after it,
per broker, keyed by task id (see `queue` for the guarantees), by a `Replayer` thread.
No Celery import here: the adapter passes a ``send`` callable."""

from .entry import DEFER_POLICIES, DeferredEntry, check_policy, new_entry
from .memory import MemoryDeferredQueue
from .queue import LOCK_TTL_MS, SENT_RETENTION, DeferredQueue, QueueCheck, ReplayReport
from .replayer import Replayer

__all__ = [
    "DEFER_POLICIES",
    "LOCK_TTL_MS",
    "SENT_RETENTION",
    "DeferredEntry",
    "DeferredQueue",
    "MemoryDeferredQueue",
    "QueueCheck",
    "ReplayReport",
    "Replayer",
    "check_policy",
    "new_entry",
]
