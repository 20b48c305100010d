"""`CeleryFleet`: the workers an emergency drives, through Celery's remote control.

Only the workers registered under the guard's key prefix (by `install`'s `worker_ready`
hook) and on the app's broker, addressed by hostname (``destination=``): another app's
workers on the same broker and control exchange are never touched. Duck-typed on the
app (``app.control``); the commands it calls are registered by the worker side
(`maintenance_guard.celery.emergency`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..brokers import broker_key, broker_of
from ..deferred import DeferredQueue
from ..errors import InvalidInput, StoreUnavailable
from ..inflight import InflightRegistry

if TYPE_CHECKING:
    from ..guard import MaintenanceGuard

REPLY_TIMEOUT = 1.0
POLL_INTERVAL = 0.05

# Worker remote-control commands registered by `maintenance_guard.celery.emergency`.
CMD_ACTIVE = "maintenance_guard_active"
CMD_RUNNING = "maintenance_guard_running"
CMD_KILL = "maintenance_guard_kill"
CMD_RESERVED = "maintenance_guard_reserved"


class CeleryFleet:
    """Talks to the workers of one Celery app through its remote control, and only to
    the ``workers`` given (by hostname: ``destination=``), never to another app's
    workers on the same broker."""

    def __init__(self, app: Any, workers: list[str], timeout: float = REPLY_TIMEOUT) -> None:
        self.app = app
        self.workers = sorted(workers)
        self.timeout = timeout
        # Workers that answered the last command: a silent one's jobs count as running.
        self.last_replied: set[str] = set()

    def _gather(self, replies: list[dict[str, Any]] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for reply in replies or []:
            out.update(reply)
        return out

    def _call(self, command: str, workers: list[str], **arguments: Any) -> dict[str, Any]:
        if not workers:
            self.last_replied = set()
            return {}
        replies = self._gather(
            self.app.control.broadcast(
                command,
                arguments=arguments,
                destination=list(workers),
                reply=True,
                timeout=self.timeout,
                limit=len(workers),
            )
        )
        self.last_replied = set(replies) & set(workers)
        return {w: r for w, r in replies.items() if w in workers}

    def ping(self) -> set[str]:
        """The fleet's workers that answer a ping (returns once all did, else after the
        reply timeout)."""
        return set(self._call("ping", self.workers))

    def active(self, workers: list[str]) -> dict[str, dict[str, Any]]:
        """Task id -> job info for every job running on ``workers``."""
        jobs: dict[str, dict[str, Any]] = {}
        for worker, reply in self._call(CMD_ACTIVE, workers).items():
            for job in (reply or {}).get("jobs", []):
                jobs[job["id"]] = {**job, "worker": worker}
        return jobs

    def running(self, workers: list[str], ids: list[str]) -> dict[str, int]:
        """Which of ``ids`` still run in a pool process: id -> pid."""
        found: dict[str, int] = {}
        for reply in self._call(CMD_RUNNING, workers, task_ids=ids).values():
            found.update((reply or {}).get("running", {}))
        return found

    def kill(self, workers: list[str], ids: list[str]) -> dict[str, int]:
        """SIGKILL the pool processes still running ``ids``: id -> pid killed."""
        killed: dict[str, int] = {}
        for reply in self._call(CMD_KILL, workers, task_ids=ids).values():
            killed.update((reply or {}).get("killed", {}))
        return killed

    def revoke(self, ids: list[str], signal: str, workers: list[str]) -> None:
        """Revoke ``ids`` on ``workers``, terminating their processes with ``signal``."""
        if ids and workers:
            self.app.control.revoke(ids, terminate=True, signal=signal, destination=sorted(workers))


def fleet_of(guard: MaintenanceGuard, app: Any) -> tuple[CeleryFleet, dict[str, dict[str, Any]]]:
    """The fleet of ``app``'s workers registered under the guard's prefix, and the
    registered workers of other brokers (unreachable through this app). Raises
    `StoreUnavailable`."""
    broker = broker_of(app)
    registered = InflightRegistry(guard.store, guard.settings.heartbeat_timeout).workers()
    mine = [w for w, info in registered.items() if info.get("broker") in (None, broker)]
    others = {w: info for w, info in registered.items() if w not in mine}
    return CeleryFleet(app, mine), others


def presence_by_pid(guard: MaintenanceGuard) -> dict[str, float]:
    """pid -> when that process last polled (its presence record), for the report."""
    read = getattr(guard.store, "read_presence", None)
    if read is None:
        return {}
    try:
        records = read()
    except StoreUnavailable:
        return {}
    return {str(r.get("pid")): float(r.get("seen_at") or 0) for r in records.values()}


def held_back_ids(guard: MaintenanceGuard, app: Any, ids: list[str]) -> set[str]:
    """Which of ``ids`` a worker parked just before they would have started."""
    if not ids or app is None:
        return set()
    try:
        queue = DeferredQueue(guard.store, broker_key(broker_of(app)))
        return {i for i in ids if queue.state_of(i) in ("parked", "replaying", "sent")}
    except (StoreUnavailable, InvalidInput):
        return set()
