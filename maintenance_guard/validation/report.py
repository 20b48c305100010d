"""The test-mode validation report: what normal or emergency mode would have done.

`build_test_report(guard)` finds the latest test-mode window in the audit log, tallies
the attempts recorded in it per operation and surface, lists the in-flight jobs and
which would outlive an emergency grace period, counts the sessions an emergency would
invalidate, measures the cost of `guard.check` in this process, and gives a verdict on
each step of the procedure (state propagated, workers registered, status API answered).

The report reads only, except that it forgets process presence records older than a day
(processes that ended without saying so, e.g. killed or recycled pool children).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput
from ..events import DROPPED_FIELD, total_counts
from ..inflight import InflightRegistry
from ..inputs import MAX_GRACE_SECONDS, clean_actor
from ..modes import MaintenanceMode
from ..status import iso_utc
from ..store import event_fields
from ..urls import mask_url
from .inventory import count_sessions, describe_inflight
from .judges import (
    FAIL,
    PASS,
    Verdict,
    check_status_api,
    judge_propagation,
    judge_records,
    judge_workers,
)
from .latency import measure_check_latency
from .records import TestRecords
from .window import NoTestWindow, OperationTally, TestWindow, find_test_window, tally_records

if TYPE_CHECKING:
    from ..guard import MaintenanceGuard

PRESENCE_FORGET_AFTER = 86_400  # presence records older than this are deleted by reports


@dataclass(frozen=True)
class TestReport:
    """The validation report of one test-mode window (see `build_test_report`)."""

    __test__ = False  # not a pytest test class, despite the name

    window: TestWindow
    generated_at: float
    operations: dict[str, OperationTally]
    records: dict[str, Any]
    counters_since_reset: dict[str, Any]
    inflight: dict[str, Any]
    sessions: dict[str, Any]
    latency: dict[str, Any] | None
    processes: list[dict[str, Any]]
    verdicts: list[Verdict]

    @property
    def verdict(self) -> str:
        """``pass`` if every check passed, ``fail`` if any failed, else ``incomplete``."""
        results = {v.result for v in self.verdicts}
        if FAIL in results:
            return FAIL
        return PASS if results == {PASS} else "incomplete"

    def totals(self) -> dict[str, int]:
        """Attempts, would-be refusals in normal and in emergency, over all operations."""
        ops = self.operations.values()
        return {
            "attempts": sum(t.attempts for t in ops),
            "would_block_normal": sum(t.would_block_normal for t in ops),
            "would_block_emergency": sum(t.would_block_emergency for t in ops),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "report": "test_mode",
            "generated_at": iso_utc(self.generated_at),
            "window": {
                "start": iso_utc(self.window.start),
                "end": iso_utc(self.window.end),
                "ongoing": self.window.end is None,
                "seconds": round((self.window.end or self.generated_at) - self.window.start, 1),
                "started_by": self.window.started_by,
                "reason": self.window.reason,
            },
            "totals": self.totals(),
            "operations": {name: t.to_dict() for name, t in self.operations.items()},
            "records": self.records,
            "counters_since_reset": self.counters_since_reset,
            "inflight": self.inflight,
            "sessions": self.sessions,
            "latency": self.latency,
            "processes": self.processes,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "verdict": self.verdict,
        }

    def to_text(self) -> str:
        """A readable report for a terminal."""
        w = self.window
        end = "still on" if w.end is None else iso_utc(w.end)
        lines = [
            "Test-mode validation report",
            f"Window: {iso_utc(w.start)} -> {end}  (started by {w.started_by}: {w.reason})",
            "",
            f"{'operation':<26}{'attempts':>9}{'normal':>9}{'emergency':>11}  surfaces",
        ]
        for name, t in self.operations.items():
            surfaces = ", ".join(f"{s}={c['attempts']}" for s, c in sorted(t.by_surface.items()))
            lines.append(
                f"{name:<26}{t.attempts:>9}{t.would_block_normal:>9}"
                f"{t.would_block_emergency:>11}  {surfaces}"
            )
        if not self.operations:
            lines.append("(no attempts recorded in the window)")
        tot = self.totals()
        lines.append(
            f"{'total':<26}{tot['attempts']:>9}{tot['would_block_normal']:>9}"
            f"{tot['would_block_emergency']:>11}"
        )
        lines.append("  normal / emergency: attempts each mode would have refused")
        if self.records.get("dropped"):
            lines.append(f"  WARNING: {self.records['dropped']} records dropped (buffer full)")
        inf = self.inflight
        lines += [
            "",
            f"In-flight jobs now: {inf['count']}; running longer than the "
            f"{inf['grace_period']}s grace period: {inf['outliving_grace']}",
        ]
        for job in inf["jobs"][:10]:
            flag = "  OUTLIVES GRACE" if job["outlives_grace"] else ""
            lines.append(
                f"  {job['id']}  {job['task'] or '?'} ({job['operation']})  "
                f"{job['elapsed_seconds']}s{flag}"
            )
        s = self.sessions
        if "error" in s:
            lines.append(f"Sessions: not counted ({s['error']})")
        else:
            lines.append(
                f"Sessions emergency would invalidate: {s.get('would_invalidate')} "
                f"of {s.get('sessions')} under {s.get('key_prefix')!r} "
                f"({s.get('admin_kept')} admin kept)"
            )
        if self.latency:
            cur, off = self.latency["current"], self.latency["off"]
            lines.append(
                f"check() latency ({self.latency['calls']} calls): {cur['mode']} mode "
                f"p50 {cur['p50_us']}us p99 {cur['p99_us']}us; "
                f"off p50 {off['p50_us']}us p99 {off['p99_us']}us"
            )
        lines += ["", "Checks:"]
        for v in self.verdicts:
            lines.append(f"  [{v.result.upper():^7}] {v.name}: {v.detail}")
        lines.append(f"Verdict: {self.verdict.upper()}")
        return "\n".join(lines)


def build_test_report(
    guard: MaintenanceGuard,
    *,
    grace: int = 30,
    status_url: str | None = None,
    session_prefix: str = "session:",
    latency_calls: int = 5000,
) -> TestReport:
    """Build the validation report of the latest test-mode window.

    Raises `NoTestWindow` if the audit log has none, `InvalidInput` for bad arguments
    and `StoreUnavailable` if Redis cannot be read. Read-only.
    """
    if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= MAX_GRACE_SECONDS:
        raise InvalidInput(f"grace must be a whole number of seconds from 0 to {MAX_GRACE_SECONDS}")
    if not isinstance(session_prefix, str) or not session_prefix:
        raise InvalidInput("session prefix must be a non-empty string")
    if latency_calls and not 100 <= latency_calls <= 1_000_000:
        raise InvalidInput("latency calls must be 0 (skip) or between 100 and 1000000")
    if status_url is not None and not status_url.startswith(("http://", "https://")):
        raise InvalidInput(f"status URL must be http(s), not {mask_url(status_url)!r}")
    store = guard.store
    test_records = TestRecords(store)  # needs Redis: refused clearly on another store
    registry = InflightRegistry(store, guard.settings.heartbeat_timeout, guard.now)
    guard.flush()
    status = guard.refresh(raise_errors=True)
    window = find_test_window(guard.events(limit=10_000))
    if window is None:
        raise NoTestWindow(
            "no test-mode window in the audit log; start one with "
            "`maintenance-guard enable --mode test --reason ...`"
        )
    now = time.time()
    operations, records = tally_records(test_records.read(window.start), window)
    raw_counts = store.read_attempt_counts()
    records["dropped"] = raw_counts.get(DROPPED_FIELD, 0)
    counters = {
        "would_block_normal": total_counts(raw_counts, "would_block_normal"),
        "would_block_emergency": total_counts(raw_counts, "would_block_emergency"),
        "blocked": total_counts(raw_counts, "blocked"),
    }
    live_jobs, details = registry.snapshot(now)
    inflight = describe_inflight(live_jobs, details, now, grace, window)
    try:
        sessions = count_sessions(test_records.redis, session_prefix)
    except (ImportError, InvalidInput) as exc:
        sessions = {"key_prefix": session_prefix, "error": str(exc)}
    latency = measure_check_latency(guard, latency_calls) if latency_calls else None
    test_records.store.prune_presence(now - PRESENCE_FORGET_AFTER)
    presence = test_records.store.read_presence()
    propagated, live = judge_propagation(presence, status.version, now)
    verdicts = [
        propagated,
        judge_workers({w: json.dumps(i) for w, i in registry.workers().items()}, live),
        check_status_api(status_url, status),
        judge_records(records["dropped"], presence, window.start, now),
    ]
    if status.mode is not MaintenanceMode.TEST and window.end is None:
        verdicts.append(
            Verdict("window_closed", FAIL, "audit log and state disagree about test mode")
        )
    return TestReport(
        window, now, operations, records, counters, inflight, sessions, latency, live, verdicts
    )


def reset_test_data(guard: MaintenanceGuard, by: str) -> int:
    """Delete the test-mode records and counters; logs an audit event.

    Returns how many recorded attempts were deleted.
    """
    actor = clean_actor(by)
    test_records = TestRecords(guard.store)
    deleted = test_records.clear()
    test_records.store.prune_presence(time.time() - PRESENCE_FORGET_AFTER)
    guard.store.append_event(
        event_fields(
            "test_data_reset",
            actor=actor,
            reason="test-mode records and counters cleared",
            records=deleted,
        )
    )
    return deleted
