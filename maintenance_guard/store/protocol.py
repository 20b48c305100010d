"""The storage interface: what the guard needs from shared storage, and its values.

No I/O here: `RedisStore` (redis_store.py) is the real implementation, `MemoryStore`
(memory.py) one in process memory for tests and single-process use.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..status import MaintenanceStatus, iso_utc
from ..tally import StoredWindow, WindowTally


@dataclass(frozen=True)
class AuditEvent:
    """One entry of the audit log (a Redis stream entry)."""

    id: str
    type: str
    at: float
    actor: str
    reason: str
    fields: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """JSON form: id, type, at (ISO), actor, reason and the other fields."""
        return {
            "id": self.id,
            "type": self.type,
            "at": iso_utc(self.at),
            "actor": self.actor,
            "reason": self.reason,
            **self.fields,
        }


SERVER_TIME = "now"
"""Value of a time field (``started_at``, ``opened_at``, ``changed_at``, event ``at``) that
`change_state` replaces with Redis' own clock, so no process's clock decides fleet-wide
times."""


@dataclass(frozen=True)
class StateStamp:
    """Which state a process has: the store's history id and the version within it."""

    generation: str
    version: int

    @classmethod
    def parse(cls, raw: object) -> StateStamp | None:
        """Decode a published ``generation:version`` (None when unreadable)."""
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        generation, _, version = text.rpartition(":")
        try:
            return cls(generation, int(version))
        except ValueError:
            return None


@dataclass(frozen=True)
class Notice:
    """One change notification: the new stamp, and the new state itself when the
    notification carried it (then no re-read is needed)."""

    stamp: StateStamp
    status: MaintenanceStatus | None = None


@dataclass(frozen=True)
class PollResult:
    """One watcher poll: the stored stamp (None when the store holds no state) and Redis'
    clock at the time of the read (epoch seconds)."""

    stamp: StateStamp | None
    server_time: float
    reads: tuple[str | None, ...] = ()  # the values of the poll's ``reads`` keys


class Subscription(Protocol):
    """A live change feed: `wait` returns the next notification, or None on timeout."""

    def wait(self, timeout: float) -> Notice | None: ...

    def close(self) -> None: ...


class StateStore(Protocol):
    """What the guard needs from shared storage. Every method may raise `StoreUnavailable`."""

    def load_state(self) -> MaintenanceStatus | None: ...

    def poll(
        self,
        member: str,
        presence: Mapping[str, object],
        echo: str = "",
        reads: Sequence[str] = (),
    ) -> PollResult: ...

    def change_state(
        self,
        fields: Mapping[str, str],
        event: Mapping[str, str],
        expected_version: int | None = None,
        *,
        not_before: float | None = None,
    ) -> MaintenanceStatus: ...

    def restore_state(self, status: MaintenanceStatus, event: Mapping[str, str]) -> bool: ...

    def subscribe(self) -> Subscription: ...

    def append_event(self, event: Mapping[str, str]) -> str: ...

    def read_events(self, limit: int = 50, since: float | None = None) -> list[AuditEvent]: ...

    def record_attempts(
        self,
        counts: Mapping[str, int],
        records: Sequence[Mapping[str, str]],
        windows: Mapping[str, WindowTally] | None = None,
    ) -> None: ...

    def read_window(self, window: str | None = None) -> StoredWindow | None: ...

    def read_attempt_counts(self) -> dict[str, int]: ...

    def count_inflight(self, now: float) -> int: ...

    def record_presence(self, member: str, fields: Mapping[str, object]) -> None: ...

    def remove_presence(self, member: str) -> None: ...

    def ping(self) -> None: ...


def new_generation() -> str:
    """A fresh random history id."""
    return uuid.uuid4().hex[:16]


def event_fields(
    type_: str, *, actor: str, reason: str = "", at: float | str | None = None, **extra: object
) -> dict[str, str]:
    """Flat string fields of an audit event (``at`` may be `SERVER_TIME` for a change)."""
    fields = {
        "type": type_,
        "actor": actor,
        "reason": reason,
        "at": at if isinstance(at, str) else repr(time.time() if at is None else at),
    }
    for k, v in extra.items():
        if v is None:
            continue
        fields[k] = v if isinstance(v, str) else json.dumps(v)
    return fields


def dump_json(value: Sequence[object] | Mapping[str, object]) -> str:
    """Compact JSON for values stored in Redis."""
    return json.dumps(value, separators=(",", ":"))
