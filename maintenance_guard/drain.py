"""`drain`: wait until no blocked work runs, and none can start, before going on.

"Drained" means: no tracked job (of the operations asked for) is in flight, and no
blocked message published before maintenance began can still start. Two policies for
such messages (queued in the broker, or reserved by a worker):

- ``hold`` (default): the state is marked so that workers hold them back too (they are
  parked and run once maintenance ends); drain first waits until every live guard
  process has seen that mark, then for the running jobs to finish.
- ``wait``: they run; drain also waits until the workers hold no reserved message of
  those operations and the queues they consume are empty (needs the Celery app).

A job whose worker died (its heartbeat stopped) is not waited for: it is reported in
``lost``. Workers write in-flight records a little after a job starts (tracking.py), so
"none runs" is believed only from a registry read made `INFLIGHT_VISIBLE_WITHIN` after
no waited-for job could start any more. No Celery import: the app is passed in and
driven through its remote control.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .emergency import CMD_RESERVED, fleet_of, setup_of
from .errors import InvalidInput, StoreUnavailable
from .inflight import InflightJob, InflightRegistry
from .inputs import clean_actor
from .metrics import observe_drain
from .modes import MaintenanceMode
from .store import SERVER_TIME, event_fields
from .tracking import INFLIGHT_VISIBLE_WITHIN

if TYPE_CHECKING:
    from .guard import MaintenanceGuard
    from .status import MaintenanceStatus

DRAIN_POLICIES = ("hold", "wait")
MAX_DRAIN_SECONDS = 86_400
# How long a live process may take to see the hold (beyond its own poll interval).
SEEN_MARGIN = 2.0


@dataclass
class DrainResult:
    """The outcome of `drain`: ``drained`` is False on timeout, with what still runs.

    ``lost`` lists jobs whose worker died while they ran (their heartbeat stopped): they
    did not finish. ``held`` says blocked messages published before maintenance are held
    back (policy ``hold``); ``waiting`` counts the queued or reserved messages still to
    start when a ``wait`` drain timed out; ``behind`` names processes that had not seen
    the hold when the drain ended.
    """

    drained: bool
    elapsed: float
    remaining: list[InflightJob] = field(default_factory=list)
    lost: list[InflightJob] = field(default_factory=list)
    policy: str = "hold"
    held: bool = False
    waiting: int = 0
    behind: list[str] = field(default_factory=list)


DrainProgress = Callable[[list[InflightJob], float], None]


def drain(
    guard: MaintenanceGuard,
    timeout: float,
    operations: Iterable[str] | None = None,
    *,
    queued: str = "hold",
    celery_app: Any = None,
    by: str | None = None,
    poll_interval: float = 0.25,
    progress: DrainProgress | None = None,
) -> DrainResult:
    """Wait until no tracked job (of ``operations``, if given) is in flight and no
    blocked message published before maintenance can start (``queued`` policy above).

    Blocks up to ``timeout`` seconds; ``progress(jobs, elapsed)`` is called after each
    poll. Raises `InvalidInput` for a bad timeout, policy or operation (and for ``wait``
    without a Celery app), and `StoreUnavailable` if Redis cannot be read.
    """
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 <= timeout <= MAX_DRAIN_SECONDS
    ):
        raise InvalidInput(f"timeout must be a number of seconds between 0 and {MAX_DRAIN_SECONDS}")
    if queued not in DRAIN_POLICIES:
        raise InvalidInput(f"queued must be one of {', '.join(DRAIN_POLICIES)}, not {queued!r}")
    wanted: frozenset[str] | None = None
    if operations is not None:
        if isinstance(operations, str):
            raise InvalidInput("operations must be a list of operation names")
        wanted = frozenset(guard.catalog.require(op) for op in operations)
    app = celery_app if celery_app is not None else setup_of(guard).celery_app
    if queued == "wait" and app is None:
        raise InvalidInput("drain with queued='wait' needs the Celery app (--app module:attr)")
    registry = InflightRegistry(guard.store, guard.settings.heartbeat_timeout, guard.now)
    began_at = guard.now()
    started = time.monotonic()
    result = DrainResult(False, 0.0, policy=queued)
    if queued == "hold":
        status = hold_queued(guard, by)
        result.held = status.hold_queued
        if result.held:
            result.behind = _wait_until_seen(guard, status, started + timeout)

    def running() -> list[InflightJob]:
        jobs = registry.jobs()
        return jobs if wanted is None else [j for j in jobs if j.operation in wanted]

    # From `settled` on, no job drain waits for can start (every process holds them
    # back, or the workers had none reserved and the queues none queued); one that
    # started before may reach the registry up to INFLIGHT_VISIBLE_WITHIN later, so
    # "none runs" is believed only from a read made that long after `settled`.
    settled = time.monotonic()
    while True:
        read_at = time.monotonic()
        jobs = running()
        waiting = 0
        if queued == "wait" and not jobs:
            waiting = _messages_waiting(app, registry, wanted, guard)
            settled = time.monotonic()  # after the workers' replies
        done = not jobs and not waiting and not result.behind
        if done and read_at < settled + INFLIGHT_VISIBLE_WITHIN:
            time.sleep(max(0.0, settled + INFLIGHT_VISIBLE_WITHIN - time.monotonic()))
            jobs = running()
            done = not jobs
        elapsed = time.monotonic() - started
        if progress is not None:
            progress(jobs, elapsed)
        if done or elapsed >= timeout:
            observe_drain(elapsed)
            result.drained, result.elapsed, result.remaining = done, elapsed, jobs
            result.waiting = waiting
            result.lost = [
                j for j in registry.lost(since=began_at) if wanted is None or j.operation in wanted
            ]
            _log_outcome(guard, result, by)
            return result
        if result.behind:
            result.behind = _processes_behind(guard, guard.current())
            settled = time.monotonic()
        time.sleep(min(poll_interval, max(0.0, timeout - elapsed)) or poll_interval)


def hold_queued(guard: MaintenanceGuard, by: str | None = None) -> MaintenanceStatus:
    """Mark normal maintenance so that blocked messages published before it began are
    held back too (audit event ``drain_hold``); a no-op outside normal mode or when
    already held. Returns the state in force."""
    actor = clean_actor(by)

    def make_event(old: MaintenanceStatus | None) -> dict[str, str]:
        return event_fields(
            "drain_hold",
            actor=actor,
            reason="drain: blocked messages published before maintenance are held back",
            at=SERVER_TIME,
            mode="normal",
        )

    def make_new(old: MaintenanceStatus | None) -> MaintenanceStatus:
        assert old is not None  # skip_if has excluded it
        return replace(old, hold_queued=True)

    return guard.change_state(
        make_new,
        make_event,
        skip_if=lambda old: (
            old is None or old.mode is not MaintenanceMode.NORMAL or old.hold_queued
        ),
    )


def _processes_behind(guard: MaintenanceGuard, status: MaintenanceStatus) -> list[str]:
    """Live guard processes (fresh presence, not ended) that have not seen ``status``."""
    read = getattr(guard.store, "read_presence", None)
    if read is None:
        return []
    now = guard.now()
    behind = []
    for member, record in read().items():
        seen_at = float(record.get("seen_at") or 0)
        interval = float(record.get("poll_interval") or 1.0)
        if record.get("exited") or now - seen_at > 3 * interval + SEEN_MARGIN:
            continue
        same = record.get("generation") in (None, status.generation)
        if not same or int(record.get("version") or 0) < status.version:
            behind.append(member)
    return sorted(behind)


def _wait_until_seen(
    guard: MaintenanceGuard, status: MaintenanceStatus, deadline: float
) -> list[str]:
    """Wait until every live process has seen the hold; returns those that had not by
    ``deadline``."""
    while True:
        behind = _processes_behind(guard, status)
        if not behind or time.monotonic() >= deadline:
            return behind
        time.sleep(0.05)


def _messages_waiting(
    app: Any,
    registry: InflightRegistry,
    wanted: frozenset[str] | None,
    guard: MaintenanceGuard,
) -> int:
    """Reserved messages (of the operations) in this app's workers plus every message in
    the queues they consume."""
    fleet, _others = fleet_of(guard, app)
    waiting = 0
    queues: set[str] = set()
    for reply in fleet._call(CMD_RESERVED, fleet.workers).values():
        for job in (reply or {}).get("reserved", []):
            if wanted is None or job.get("operation") in wanted:
                waiting += 1
        queues.update((reply or {}).get("queues", []))
    if queues:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for name in sorted(queues):
                try:
                    waiting += int(channel.queue_declare(queue=name, passive=True).message_count)
                except Exception:  # a queue that no longer exists holds nothing
                    channel = conn.channel()
    return waiting


def _log_outcome(guard: MaintenanceGuard, result: DrainResult, by: str | None) -> None:
    """Audit event ``drain_completed`` or ``drain_timed_out`` (with what still runs), so
    it can be notified; a store that fails here does not fail the drain."""
    still = [{"id": j.id, "task": j.name, "worker": j.worker} for j in result.remaining[:50]]
    try:
        guard.store.append_event(
            event_fields(
                "drain_completed" if result.drained else "drain_timed_out",
                actor=by or "maintenance-guard",
                reason="" if result.drained else "jobs still running when the drain timed out",
                elapsed=f"{result.elapsed:.2f}",
                still_running=still if still else None,
                waiting=str(result.waiting) if result.waiting else None,
            )
        )
    except StoreUnavailable as exc:
        guard.note_store_error(exc)
