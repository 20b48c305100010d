"""Admin bypass carried in a message: an HMAC only processes with the store can make.

An admin's submission during maintenance (`MaintenanceGuard.admin_bypass`) is stamped
with an HMAC-SHA256 of the task name, id and publish time, keyed by a random secret kept
in the state store (created once, shared by the fleet). The worker's re-check runs a
message with a valid stamp as an admin's. A producer without access to the store cannot
forge the stamp by setting a header, and a stamp copied onto another message (another
name, id or time) does not verify. No Celery import.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from typing import cast

from .errors import StoreUnavailable
from .records import RedisRecords
from .store import StateStore


class AdminSigner(RedisRecords):
    """Signs and verifies admin stamps with the fleet's secret (read once, then cached).

    Raises `StoreUnavailable` from `sign` when the secret is not known yet and Redis
    cannot be read; `verify` answers False then.
    """

    what = "admin stamps"

    def __init__(self, store: StateStore) -> None:
        super().__init__(store)
        self.secret_key = self.key("admin_secret")
        self._secret: bytes | None = None
        self._lock = threading.Lock()

    def sign(self, name: str, task_id: str, published_at: str) -> str:
        """The stamp for one message."""
        digest = hmac.new(self._load(), _message(name, task_id, published_at), hashlib.sha256)
        return digest.hexdigest()[:40]

    def verify(self, stamp: object, name: str, task_id: object, published_at: object) -> bool:
        """True if ``stamp`` was made by `sign` for exactly this name, id and time."""
        if not isinstance(stamp, str) or not isinstance(task_id, str):
            return False
        try:
            expected = self.sign(name, task_id, str(published_at))
        except StoreUnavailable:
            return False
        return hmac.compare_digest(stamp, expected)

    def _load(self) -> bytes:
        if self._secret is not None:
            return self._secret
        with self._lock:
            if self._secret is None:
                redis = self.redis
                with self.errors("read the admin signing secret"):
                    redis.set(self.secret_key, secrets.token_hex(32), nx=True)
                    value = cast("str | None", redis.get(self.secret_key))
                if value is None:
                    raise StoreUnavailable("the admin signing secret vanished")
                self._secret = value.encode()
            return self._secret


class LocalSigner:
    """`AdminSigner` for a guard on a `MemoryStore`: a random secret of this process
    (its producers and its in-process worker share it; nothing else can)."""

    def __init__(self) -> None:
        self._secret = secrets.token_hex(32).encode()

    def sign(self, name: str, task_id: str, published_at: str) -> str:
        """The stamp for one message."""
        digest = hmac.new(self._secret, _message(name, task_id, published_at), hashlib.sha256)
        return digest.hexdigest()[:40]

    def verify(self, stamp: object, name: str, task_id: object, published_at: object) -> bool:
        """True if ``stamp`` was made by `sign` for exactly this name, id and time."""
        if not isinstance(stamp, str) or not isinstance(task_id, str):
            return False
        return hmac.compare_digest(stamp, self.sign(name, task_id, str(published_at)))


def _message(name: str, task_id: str, published_at: str) -> bytes:
    return f"{name}\n{task_id}\n{published_at}".encode()
