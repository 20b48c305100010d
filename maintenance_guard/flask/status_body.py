"""The status JSON the routes and pages answer, from the guard's memory.

The in-flight job count is read from the store at most once per ``JOBS_CACHE_SECONDS``, and
an encoded body is reused within the same second while nothing changes, so the status route
stays cheap under polling.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from ..errors import StoreUnavailable
from ..guard import MaintenanceGuard


class _JobCount:
    """The in-flight job count, read from the store at most once per ``ttl`` seconds."""

    def __init__(self, guard: MaintenanceGuard, ttl: float) -> None:
        self._guard = guard
        self._ttl = ttl
        self._lock = threading.Lock()
        self._value = 0
        self._read_at = float("-inf")

    def get(self) -> int:
        now = time.monotonic()
        if now - self._read_at < self._ttl:
            return self._value
        with self._lock:
            if now - self._read_at < self._ttl:
                return self._value
            try:
                self._value = self._guard.store.count_inflight(time.time())
            except StoreUnavailable:
                pass  # keep the last count; the guard logs store errors itself
            self._read_at = time.monotonic()
            return self._value


class StatusBody:
    """The contract status JSON of one guard, with the job count cached for ``jobs_ttl``."""

    def __init__(self, guard: MaintenanceGuard, *, jobs_ttl: float) -> None:
        self._guard = guard
        self._jobs = _JobCount(guard, jobs_ttl)
        self._cache: dict[bool, tuple[tuple[int, int, int, bool, int], bytes]] = {}

    def jobs_count(self) -> int:
        """In-flight jobs (cached)."""
        return self._jobs.get()

    def as_json(self, *, admin: bool) -> bytes:
        """`as_dict` encoded, reused within the same second while nothing changes."""
        status = self._guard.current()
        jobs = self.jobs_count() if status.is_active else 0
        key = (id(status), status.version, jobs, admin, int(time.time()))
        cached = self._cache.get(admin)
        if cached is not None and cached[0] == key:
            return cached[1]
        if status.is_active:
            status = status.with_jobs(jobs)
        body = json.dumps(status.to_dict(include_admin=admin), separators=(",", ":")).encode()
        self._cache[admin] = (key, body)
        return body

    def as_dict(self, *, admin: bool) -> dict[str, Any]:
        """The status from memory; admin fields only for admins."""
        status = self._guard.current()
        if status.is_active:
            status = status.with_jobs(self.jobs_count())
        return status.to_dict(include_admin=admin)
