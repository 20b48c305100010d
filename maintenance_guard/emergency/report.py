"""The emergency report: a timeline of the last emergency, as JSON and as text."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..events import summarise_counts
from ..modes import MaintenanceMode
from .records import EmergencyRecords

if TYPE_CHECKING:
    from ..guard import MaintenanceGuard


# ---------------------------------------------------------------------------- report

_TIMELINE_EVENTS = (
    "enabled",
    "mode_changed",
    "emergency_activated",
    "sessions_invalidated",
    "consumers_cancelled",
    "jobs_revoked",
    "jobs_killed",
    "emergency_completed",
    "emergency_warning",
    "disabled",
    "auto_ended",
    "emergency_checks",
    "jobs_recovered",
)


_NOTED = ("emergency_activated", "emergency_warning", "enabled", "disabled")


@dataclass
class EmergencyOverview:
    """The emergency report: `build_report` gathers it, `to_dict`/`to_text` show it."""

    emergency: dict[str, Any] | None
    timeline: list[dict[str, Any]]
    blocked_attempts: dict[str, dict[str, int]]
    deactivated: dict[str, Any] | None
    checks: dict[str, Any] | None
    recovery: dict[str, Any]
    redeliveries_dropped: dict[str, Any]
    active: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)

    def to_text(self) -> str:
        """Readable text."""
        return render_report_text(self.to_dict())


def build_report(guard: MaintenanceGuard) -> EmergencyOverview:
    """The last emergency's report from Redis: timeline, jobs, sessions, blocked attempts,
    deactivation, checks and recovery. Raises `StoreUnavailable`."""
    records = EmergencyRecords(guard.store)
    emergency = records.report()
    since = None if emergency is None else float(emergency["activated_at"]) - 1
    events = list(reversed(guard.events(limit=5000, since=since))) if emergency else []
    timeline = [
        {"at": e.at, "type": e.type, "actor": e.actor, "reason": e.reason, **e.fields}
        for e in events
        if e.type in _TIMELINE_EVENTS
    ]
    deactivated = next(
        (
            {"at": e["at"], "by": e["actor"], "type": e["type"]}
            for e in timeline
            if e["type"] in ("disabled", "auto_ended")
        ),
        None,
    )
    guard.flush()
    counts = summarise_counts(guard.store.read_attempt_counts()).get("blocked", {})
    blocked = {op: dict(surfaces) for op, surfaces in counts.items()}
    skipped = records.skipped()
    return EmergencyOverview(
        emergency=emergency,
        timeline=timeline,
        blocked_attempts=blocked,
        deactivated=deactivated,
        checks=records.checks(),
        recovery=records.recovery(),
        redeliveries_dropped=skipped,
        active=guard.current().mode is MaintenanceMode.EMERGENCY,
    )


def _clock(epoch: Any) -> str:
    if not epoch:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(epoch))) + "Z"


def render_report_text(report: Mapping[str, Any]) -> str:
    """The emergency report (the `EmergencyOverview.to_dict` shape) as readable text."""
    em = report.get("emergency")
    if not em:
        return "No emergency has been recorded."
    lines = [
        f"Emergency {em['id']}: {em['reason']}",
        f"  activated {_clock(em['activated_at'])} by {em['by']}; grace {em['grace_period']}s, "
        f"kill after {em['kill_after']}s; {'STILL ACTIVE' if report.get('active') else 'ended'}",
    ]
    if em.get("consumers_cancelled"):
        for worker, queues in em["consumers_cancelled"].items():
            lines.append(f"  paused {worker}: {', '.join(queues) or '(no queue)'}")
    gone = em.get("seconds_to_gone")
    lines.append(
        f"Jobs: {em.get('running_at_start', 0)} running at activation, "
        f"{len(em.get('finished_in_grace', []))} finished in grace, "
        f"{len(em.get('terminated', []))} terminated, {len(em.get('not_stopped', []))} not stopped"
        + (f" (last gone {gone:.3f}s after the grace period)" if gone is not None else "")
    )
    for job in em.get("finished_in_grace", []):
        lines.append(f"  finished  {job['id']}  {job.get('name')}  on {job.get('worker')}")
    recovery = report.get("recovery") or {}
    for job in em.get("terminated", []):
        rec = recovery.get(job["id"], {})
        state = rec.get("state") or ("recoverable" if job.get("recoverable") else "manual")
        lines.append(
            f"  terminated {job['id']}  {job['name']} [{job.get('operation') or '-'}] on "
            f"{job['worker']} pid {job['pid']} by {job['signal']} "
            f"at {_clock(job.get('terminated_at'))}"
            f"  args={json.dumps(job.get('args'))} kwargs={json.dumps(job.get('kwargs'))}  {state}"
            + (f" as {rec['new_id']}" if rec.get("new_id") else "")
        )
    for job in em.get("not_stopped", []):
        lines.append(
            f"  NOT STOPPED {job['id']}  {job['name']} on {job['worker']} pid {job['pid']}"
        )
    sessions = em.get("sessions")
    if sessions:
        lines.append(
            f"Sessions: {sessions['invalidated']} non-admin invalidated, "
            f"{sessions['kept_admin']} admin kept ({sessions['seconds']}s)"
        )
    else:
        lines.append("Sessions: not invalidated (no session store configured)")
    blocked = report.get("blocked_attempts") or {}
    if blocked:
        lines.append("Blocked attempts per operation:")
        for op, surfaces in sorted(blocked.items()):
            detail = ", ".join(f"{s} {n}" for s, n in sorted(surfaces.items()))
            lines.append(f"  {op}: {sum(surfaces.values())} ({detail})")
    deactivated = report.get("deactivated")
    if deactivated:
        lines.append(f"Deactivated {_clock(deactivated['at'])} by {deactivated['by']}")
    checks = report.get("checks")
    if checks:
        lines.append("Deactivation checks: " + ("all passed" if checks.get("ok") else "WARNINGS"))
        lines += [f"  ! {w}" for w in checks.get("warnings", [])]
    recovered = [(k, v) for k, v in recovery.items() if v.get("state") == "recovered"]
    if recovered:
        lines.append(f"Recovery: {len(recovered)} job(s) recovered")
    dropped = report.get("redeliveries_dropped") or {}
    if dropped:
        lines.append(f"Redelivered messages of terminated jobs dropped: {len(dropped)}")
    warnings = em.get("warnings") or []
    lines += [f"Warning: {w}" for w in warnings]
    lines.append("Timeline:")
    for event in report.get("timeline", []):
        note = event.get("reason") if event["type"] in _NOTED else ""
        lines.append(
            f"  {_clock(event['at'])}  {event['type']:<22} by {event['actor']}"
            + (f": {note}" if note else "")
        )
    return "\n".join(lines)
