"""The admin overview's ``impact``: the maintenance window's user impact, with the app's
sessions by role where Flask-Session keeps them in Redis.

The window's numbers are read from the store on each call (two round trips);
the sessions are counted with a bounded SCAN only when the overview or the dashboard asks,
at most once per `SESSIONS_CACHE_SECONDS`, never on a request's own path.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any

from flask import Flask

from ..errors import InvalidInput, StoreUnavailable
from ..guard import MaintenanceGuard
from ..sessions import SessionCount, SessionInvalidator, admin_predicate, session_counter

logger = logging.getLogger("maintenance_guard")

SESSIONS_CACHE_SECONDS = 10.0
SESSIONS_SCAN_LIMIT = 20_000


class SessionTally:
    """Counts one app's Flask-Session sessions by role, cached for ``ttl`` seconds."""

    def __init__(self, counter: SessionInvalidator, ttl: float = SESSIONS_CACHE_SECONDS) -> None:
        self.counter = counter
        self.ttl = ttl
        self._lock = threading.Lock()
        self._value: SessionCount | None = None
        self._read_at = float("-inf")

    @classmethod
    def for_app(cls, app: Flask, admin_key: str | None) -> SessionTally | None:
        """The tally of ``app``'s sessions, or None when they are not in a Redis that
        Flask-Session names (``SESSION_TYPE = "redis"`` and ``SESSION_REDIS``)."""
        client = app.config.get("SESSION_REDIS")
        if app.config.get("SESSION_TYPE") != "redis" or client is None:
            return None
        prefix = app.config.get("SESSION_KEY_PREFIX") or "session:"
        try:
            return cls(session_counter(client, prefix, admin_predicate(admin_key)))
        except InvalidInput:  # sessions on a Redis Cluster
            return None

    def get(self) -> SessionCount | None:
        """The counts (None when the session Redis cannot be read)."""
        with self._lock:
            if time.monotonic() - self._read_at < self.ttl:
                return self._value
            try:
                self._value = self.counter.count_by_role(SESSIONS_SCAN_LIMIT)
            except StoreUnavailable as exc:
                logger.warning("cannot count sessions for the dashboard: %s", exc)
                self._value = None
            self._read_at = time.monotonic()
            return self._value


def impact_dict(guard: MaintenanceGuard, sessions: SessionTally | None) -> dict[str, Any] | None:
    """The overview's ``impact``: the window under way, else the last one (None if there
    was none). Raises `StoreUnavailable`."""
    impact = guard.impact()
    if impact is None:
        return None
    if sessions is not None:
        impact = replace(impact, sessions=sessions.get())
    return impact.to_dict()
