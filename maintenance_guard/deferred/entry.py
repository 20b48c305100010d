"""`DeferredEntry`: one parked submission, and the ``on_maintenance`` policy."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InvalidInput

DEFER_POLICIES = ("refuse", "defer")


def check_policy(value: object) -> str:
    """Validate an ``on_maintenance`` value (``"refuse"`` or ``"defer"``)."""
    if value not in DEFER_POLICIES:
        raise InvalidInput(
            f"on_maintenance must be one of {', '.join(DEFER_POLICIES)}, not {value!r}"
        )
    return str(value)


@dataclass(frozen=True)
class DeferredEntry:
    """One parked submission.

    ``kind`` is ``"call"`` (a refused `send_task` call: name, args, kwargs, options) or
    ``"message"`` (a broker message the worker did not run: raw body and headers).
    """

    id: str
    kind: str
    task: str
    operation: str | None
    source: str
    deferred_at: float
    reason: str = ""
    payload: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> DeferredEntry:
        """Decode the stored form."""
        data = json.loads(raw)
        return cls(
            id=str(data["id"]),
            kind=str(data["kind"]),
            task=str(data["task"]),
            operation=data.get("operation"),
            source=str(data.get("source", "")),
            deferred_at=float(data.get("deferred_at") or 0),
            reason=str(data.get("reason", "")),
            payload=dict(data.get("payload") or {}),
        )

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description without the payload."""
        return {k: v for k, v in asdict(self).items() if k != "payload"}


def new_entry(
    *,
    entry_id: str,
    kind: str,
    task: str,
    operation: str | None,
    source: str,
    reason: str,
    payload: Mapping[str, Any],
) -> DeferredEntry:
    """A `DeferredEntry` stamped now."""
    return DeferredEntry(
        id=entry_id,
        kind=kind,
        task=task,
        operation=operation,
        source=source,
        deferred_at=time.time(),
        reason=reason,
        payload=dict(payload),
    )
