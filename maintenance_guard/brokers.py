"""Which broker a Celery app talks to, as a printable, password-free identity.

Parked work is replayed, and workers are driven, only through the broker they belong to;
both are keyed by this identity. Duck-typed on the app (no Celery import).
"""

from __future__ import annotations

import hashlib
from typing import Any

from .urls import mask_url


def broker_of(app: Any) -> str:
    """The app's broker address with the password masked (``amqp://guest:**@host//``)."""
    conf = app.conf
    url = conf.broker_write_url or conf.broker_url
    try:
        return mask_url(str(app.connection_for_write(url).as_uri()))
    except Exception:  # an unusual transport: fall back on the configured text
        return mask_url(str(url or "memory://"))


def broker_key(broker: str) -> str:
    """A short id of a broker address (names its deferred queue)."""
    return hashlib.sha256(broker.encode()).hexdigest()[:12]
