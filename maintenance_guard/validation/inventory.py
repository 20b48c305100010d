"""What an emergency would touch now: jobs in flight that would outlive a grace period,
and the sessions it would invalidate (judged as `sessions.SessionInvalidator` would,
deleting nothing)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from redis.exceptions import RedisError

from .. import sessions
from ..errors import InvalidInput, StoreUnavailable
from ..status import iso_utc
from .judges import as_float, parse_json
from .window import MAX_LISTED, TestWindow


def describe_inflight(
    live: Sequence[tuple[str, float]],
    details: Mapping[str, str],
    now: float,
    grace: int,
    window: TestWindow,
) -> dict[str, Any]:
    """Summarise live in-flight jobs (member, heartbeat deadline) with their details.

    A job outlives the grace period when it has already run longer than ``grace``
    seconds: an emergency declared when it started would have revoked it. Jobs that
    were running when the window opened are flagged ``running_at_window_start``.
    """
    jobs: list[dict[str, Any]] = []
    per_operation: dict[str, int] = {}
    outliving = 0
    for job_id, _deadline in live:
        info = parse_json(details.get(job_id))
        started = as_float(info.get("started_at", info.get("started")))
        operation = str(info.get("operation") or "-")
        per_operation[operation] = per_operation.get(operation, 0) + 1
        elapsed = None if started is None else max(0.0, now - started)
        outlives = elapsed is not None and elapsed > grace
        outliving += outlives
        jobs.append(
            {
                "id": job_id,
                "task": info.get("task") or info.get("name"),
                "operation": operation,
                "worker": info.get("worker") or info.get("hostname"),
                "started_at": iso_utc(started),
                "elapsed_seconds": None if elapsed is None else round(elapsed, 1),
                "running_at_window_start": started is not None and started <= window.start,
                "outlives_grace": outlives,
            }
        )
    jobs.sort(key=lambda j: -(j["elapsed_seconds"] or 0))
    return {
        "count": len(live),
        "details_available": bool(details),
        "per_operation": dict(sorted(per_operation.items())),
        "grace_period": grace,
        "outliving_grace": outliving,
        "jobs": jobs[:MAX_LISTED],
    }


# ---------------------------------------------------------------- sessions


def count_sessions(client: Any, prefix: str, limit: int = 1_000_000) -> dict[str, Any]:
    """Count the sessions under ``prefix`` an emergency would invalidate (non-admin).

    Uses `maintenance_guard.sessions` to decode Flask-Session values and tell admins.
    Read-only: nothing is deleted.
    """
    try:
        judge = sessions.SessionInvalidator(client, prefix)
    except InvalidInput:  # msgpack decoder missing: judge the JSON-encoded sessions only
        judge = sessions.SessionInvalidator(client, prefix, formats=("json",))
    counter = getattr(judge, "count_non_admin", None)
    if callable(counter):
        return cast(dict[str, Any], counter())
    total = admin = undecodable = 0
    match = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"  # glob-escaped prefix
    try:
        cursor = 0
        while total < limit:
            cursor, keys = judge.client.scan(cursor, match=match, count=1000)
            if keys:
                pipe = judge.client.pipeline(transaction=False)
                for key in keys:
                    pipe.get(key)
                for raw in pipe.execute():
                    if raw is None:
                        continue
                    total += 1
                    session = judge.decode(raw)
                    if session is None:
                        undecodable += 1
                    elif judge.is_admin(session):
                        admin += 1
            if cursor == 0:
                break
    except (OSError, RedisError) as exc:
        raise StoreUnavailable(f"cannot count sessions: {exc}") from exc
    return {
        "key_prefix": prefix,
        "sessions": total,
        "admin_kept": admin,
        "would_invalidate": total - admin,
        "undecodable": undecodable,
    }
