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
import re
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from .errors import InvalidInput, MaintenanceActive, MaintenanceGuardError, StoreUnavailable
from .events import DROPPED_FIELD, AttemptRecord, total_counts
from .modes import MaintenanceMode
from .status import MaintenanceStatus, iso_utc
from .store import AuditEvent, PollResult, StateStamp
from .urls import mask_url, redact

if TYPE_CHECKING:
    from .guard import MaintenanceGuard
    from .store import RedisStore

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"
WORKER_ROLES = ("worker", "celery")  # "celery" is the default role of `celery worker`
MAX_GRACE = 86_400
MAX_LISTED = 50
PRESENCE_FORGET_AFTER = 86_400  # presence records older than this are deleted by reports
_ENDING_EVENTS = ("disabled", "auto_ended")


class NoTestWindow(MaintenanceGuardError):
    """The audit log holds no test-mode window to report on."""


@dataclass(frozen=True)
class TestWindow:
    """One period in test mode, from the audit log."""

    __test__ = False  # not a pytest test class, despite the name

    start: float
    end: float | None  # None while test mode is still on
    started_by: str
    reason: str

    def contains(self, at: float) -> bool:
        """True if ``at`` falls inside the window."""
        return at >= self.start and (self.end is None or at <= self.end)


def find_test_window(events: Iterable[AuditEvent]) -> TestWindow | None:
    """The latest test-mode window in ``events`` (any order), or None.

    A window opens when an event switches the mode to ``test`` from anything else and
    closes at the next event that switches it away (disable, auto-end, another mode).
    """
    window: TestWindow | None = None
    mode: str | None = None
    for event in sorted(events, key=lambda e: (e.at, e.id)):
        after = mode
        if event.type in _ENDING_EVENTS:
            after = None
        elif "mode" in event.fields and event.type in (
            "enabled",
            "mode_changed",
            "updated",
            "state_restored",
        ):
            after = event.fields["mode"] or None
        if after == "test" and mode != "test":
            window = TestWindow(event.at, None, event.actor, event.reason)
        elif mode == "test" and after != "test" and window is not None:
            window = TestWindow(window.start, event.at, window.started_by, window.reason)
        mode = after
    return window


@dataclass
class OperationTally:
    """Would-be refusals of one operation in the window."""

    attempts: int = 0
    would_block_normal: int = 0
    would_block_emergency: int = 0
    by_surface: dict[str, dict[str, int]] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)
    users: set[str] = field(default_factory=set)

    def add(self, record: AttemptRecord) -> None:
        """Count one record."""
        self.attempts += 1
        surface = self.by_surface.setdefault(
            record.surface, {"attempts": 0, "would_block_normal": 0, "would_block_emergency": 0}
        )
        surface["attempts"] += 1
        if record.would_block_normal:
            self.would_block_normal += 1
            surface["would_block_normal"] += 1
        if record.would_block_emergency:
            self.would_block_emergency += 1
            surface["would_block_emergency"] += 1
        if record.target:
            self.targets[record.target] = self.targets.get(record.target, 0) + 1
        if record.user:
            self.users.add(record.user)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (top targets only)."""
        top = sorted(self.targets.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_LISTED]
        return {
            "attempts": self.attempts,
            "would_block_normal": self.would_block_normal,
            "would_block_emergency": self.would_block_emergency,
            "by_surface": self.by_surface,
            "targets": dict(top),
            "distinct_users": len(self.users),
        }


def tally_records(
    records: Iterable[Mapping[str, str]], window: TestWindow
) -> tuple[dict[str, OperationTally], dict[str, Any]]:
    """Tally stream records inside ``window`` by operation (``-`` when unclassified).

    Returns the tallies and a summary: records read, in window, first/last attempt time.
    """
    tallies: dict[str, OperationTally] = {}
    read = inside = 0
    first: float | None = None
    last: float | None = None
    for fields in records:
        read += 1
        record = AttemptRecord.from_fields(dict(fields))
        if not window.contains(record.at):
            continue
        inside += 1
        first = record.at if first is None else min(first, record.at)
        last = record.at if last is None else max(last, record.at)
        tallies.setdefault(record.operation or "-", OperationTally()).add(record)
    summary = {
        "records_read": read,
        "records_in_window": inside,
        "first_attempt": iso_utc(first),
        "last_attempt": iso_utc(last),
    }
    return dict(sorted(tallies.items())), summary


@dataclass(frozen=True)
class Verdict:
    """One check of the procedure: pass, fail or unknown, and why."""

    name: str
    result: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        """JSON form."""
        return {"check": self.name, "result": self.result, "detail": self.detail}


def judge_propagation(
    presence: Mapping[str, Mapping[str, Any]], version: int, now: float, stale_after: float = 10.0
) -> tuple[Verdict, list[dict[str, Any]]]:
    """Did every live guard process see state ``version``? (presence: ``host:pid`` -> record)

    A process is live if it wrote its record within ``stale_after`` seconds (or five of
    its own poll intervals, whichever is longer).
    """
    live: list[dict[str, Any]] = []
    for member, record in sorted(presence.items()):
        if record.get("exited"):
            continue  # ended cleanly (its last records flushed)
        seen_at = _as_float(record.get("seen_at"))
        interval = _as_float(record.get("poll_interval")) or 1.0
        if seen_at is None or now - seen_at > max(stale_after, 5 * interval):
            continue
        live.append(
            {
                "process": member,
                "role": record.get("role"),
                "version": record.get("version"),
                "mode": record.get("mode"),
                "seen_at": iso_utc(seen_at),
                "up_to_date": record.get("version") == version,
            }
        )
    if not live:
        return Verdict("state_propagated", UNKNOWN, "no guard process reported presence"), live
    behind = [p["process"] for p in live if not p["up_to_date"]]
    if behind:
        detail = f"{len(behind)} of {len(live)} processes have not seen version {version}: "
        return Verdict("state_propagated", FAIL, detail + ", ".join(behind[:10])), live
    return (
        Verdict("state_propagated", PASS, f"all {len(live)} live processes saw version {version}"),
        live,
    )


def judge_records(
    dropped: int,
    presence: Mapping[str, Mapping[str, Any]],
    window_start: float,
    now: float,
    stale_after: float = 2.0,
) -> Verdict:
    """Are the recorded attempts complete? Fails when records were dropped (a full
    buffer); incomplete when a guard process alive during the window stopped without a
    clean exit (killed): what it recorded after its last flush never reached the store.
    """
    if dropped:
        return Verdict("records_complete", FAIL, f"{dropped} records dropped since the last reset")
    crashed = []
    for member, record in sorted(presence.items()):
        seen_at = _as_float(record.get("seen_at"))
        interval = _as_float(record.get("poll_interval")) or 1.0
        if record.get("exited") or seen_at is None or seen_at < window_start:
            continue
        if now - seen_at > max(stale_after, 3 * interval):  # missed three polls: gone
            crashed.append(f"{member} (recorded {record.get('recorded', '?')})")
    if crashed:
        return Verdict(
            "records_complete",
            UNKNOWN,
            f"{len(crashed)} guard process(es) stopped during the window without a clean "
            "exit; attempts they recorded after their last flush (at most one poll "
            "interval) are missing: " + ", ".join(crashed[:10]),
        )
    return Verdict(
        "records_complete",
        PASS,
        "no test record dropped; every process that ended during the window flushed its records",
    )


def judge_workers(
    workers: Mapping[str, str] | None, live_processes: Sequence[Mapping[str, Any]]
) -> Verdict:
    """Are the Celery workers registered, and does each have a live guard process?

    Fails when a registered worker's host has no live guard process (its state cannot be
    confirmed), or a live worker process runs on a host with no registered worker.
    """
    worker_procs = [p for p in live_processes if p.get("role") in WORKER_ROLES]
    if not workers:
        if worker_procs:
            return Verdict(
                "workers_registered",
                FAIL,
                f"{len(worker_procs)} worker processes are live but no worker is registered",
            )
        return Verdict("workers_registered", UNKNOWN, "no worker registered and none seen")
    hosts = {name: _worker_host(name, value) for name, value in workers.items()}
    live_hosts = {str(p["process"]).rsplit(":", 1)[0] for p in live_processes}
    unseen = sorted(name for name, host in hosts.items() if host not in live_hosts)
    unregistered = sorted(
        str(p["process"])
        for p in worker_procs
        if str(p["process"]).rsplit(":", 1)[0] not in set(hosts.values())
    )
    problems = []
    if unseen:
        problems.append("registered workers with no live guard process: " + ", ".join(unseen[:10]))
    if unregistered:
        problems.append("worker processes on unregistered hosts: " + ", ".join(unregistered[:10]))
    if problems:
        return Verdict("workers_registered", FAIL, "; ".join(problems))
    return Verdict(
        "workers_registered",
        PASS,
        f"{len(workers)} workers registered, each with a live guard process",
    )


def check_status_api(url: str | None, status: MaintenanceStatus, timeout: float = 3.0) -> Verdict:
    """GET the status API at ``url`` and check it reports the current mode."""
    if not url:
        return Verdict("status_api_answered", UNKNOWN, "not checked: give --status-url")
    shown = mask_url(url)  # the URL may carry user:password@
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"status URL must be http(s), not {shown!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            code = response.status
            body = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        return Verdict("status_api_answered", FAIL, f"{shown} answered HTTP {exc.code}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = redact(str(exc), url)
        return Verdict("status_api_answered", FAIL, f"{shown} did not answer: {reason}")
    expected = status.mode.value if status.mode else None
    if not isinstance(body, dict) or body.get("mode") != expected:
        got = body.get("mode") if isinstance(body, dict) else body
        return Verdict(
            "status_api_answered", FAIL, f"{shown} answered mode {got!r}, expected {expected!r}"
        )
    return Verdict("status_api_answered", PASS, f"{shown} answered {code} with mode {expected!r}")


# ---------------------------------------------------------------- in-flight jobs


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
        info = _parse_json(details.get(job_id))
        started = _as_float(info.get("started_at", info.get("started")))
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
    from . import sessions

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
    except OSError as exc:
        raise StoreUnavailable(f"cannot count sessions: {exc}") from exc
    except Exception as exc:
        from redis.exceptions import RedisError

        if isinstance(exc, RedisError):
            raise StoreUnavailable(f"cannot count sessions: {exc}") from exc
        raise
    return {
        "key_prefix": prefix,
        "sessions": total,
        "admin_kept": admin,
        "would_invalidate": total - admin,
        "undecodable": undecodable,
    }


# ---------------------------------------------------------------- latency


class _SnapshotStore:
    """A store serving one fixed state and discarding writes: the latency probe's, so
    timing thousands of checks adds no test records to the real store."""

    def __init__(self, status: MaintenanceStatus) -> None:
        self.status = status

    def load_state(self) -> MaintenanceStatus | None:
        return self.status

    def poll(self, member: str, presence: Mapping[str, object]) -> PollResult:
        return PollResult(StateStamp(self.status.generation, self.status.version), time.time())

    def change_state(
        self,
        fields: Mapping[str, str],
        event: Mapping[str, str],
        expected_version: int | None = None,
        *,
        not_before: float | None = None,
    ) -> MaintenanceStatus:
        raise InvalidInput("the latency probe is read-only")

    def restore_state(self, status: MaintenanceStatus, event: Mapping[str, str]) -> bool:
        return False

    def subscribe(self) -> _IdleSubscription:
        return _IdleSubscription()

    def append_event(self, event: Mapping[str, str]) -> str:
        return "0-0"

    def read_events(self, limit: int = 50, since: float | None = None) -> list[AuditEvent]:
        return []

    def record_attempts(
        self, counts: Mapping[str, int], records: Sequence[Mapping[str, str]]
    ) -> None:
        return None

    def read_attempt_counts(self) -> dict[str, int]:
        return {}

    def count_inflight(self, now: float) -> int:
        return 0

    def record_presence(self, member: str, fields: Mapping[str, object]) -> None:
        return None

    def remove_presence(self, member: str) -> None:
        return None

    def ping(self) -> None:
        return None


class _IdleSubscription:
    def __init__(self) -> None:
        import threading

        self._closed = threading.Event()

    def wait(self, timeout: float) -> StateStamp | None:
        self._closed.wait(timeout)
        return None

    def close(self) -> None:
        self._closed.set()


def measure_check_latency(
    guard: MaintenanceGuard, calls: int = 5000, operation: str = "caption_generation"
) -> dict[str, Any]:
    """Time ``calls`` `check` calls in this process, in the current mode and with
    maintenance off; p50/p99/max in microseconds. Touches no store."""
    from .guard import MaintenanceGuard

    if not 100 <= calls <= 1_000_000:
        raise InvalidInput("latency calls must be between 100 and 1000000")
    current = guard.current()
    out: dict[str, Any] = {"calls": calls, "operation": operation}
    cases = [("current", current), ("off", MaintenanceStatus(version=current.version))]
    for label, status in cases:
        probe = MaintenanceGuard(
            cast("RedisStore", _SnapshotStore(status)), guard.settings, catalog=guard.catalog
        )
        try:
            probe.start()
            samples = _time_checks(probe, calls, operation)
        finally:
            probe.stop(timeout=2)
        out[label] = {
            "mode": status.mode.value if status.mode else None,
            "p50_us": round(_percentile(samples, 50) / 1000, 2),
            "p99_us": round(_percentile(samples, 99) / 1000, 2),
            "max_us": round(max(samples) / 1000, 2),
            "mean_us": round(statistics.fmean(samples) / 1000, 2),
        }
    return out


def _time_checks(probe: MaintenanceGuard, calls: int, operation: str) -> list[int]:
    from time import perf_counter_ns

    samples: list[int] = []
    check = probe.check
    for i in range(calls):
        t0 = perf_counter_ns()
        try:
            check(operation, surface="python", target="latency-probe", user=f"u{i % 50}")
        except MaintenanceActive:
            pass
        samples.append(perf_counter_ns() - t0)
    return samples


def _percentile(samples: Sequence[int], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return float(ordered[index])


# ---------------------------------------------------------------- the report


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
    if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= MAX_GRACE:
        raise InvalidInput(f"grace must be a whole number of seconds from 0 to {MAX_GRACE}")
    if not isinstance(session_prefix, str) or not session_prefix:
        raise InvalidInput("session prefix must be a non-empty string")
    if latency_calls and not 100 <= latency_calls <= 1_000_000:
        raise InvalidInput("latency calls must be 0 (skip) or between 100 and 1000000")
    if status_url is not None and not status_url.startswith(("http://", "https://")):
        raise InvalidInput(f"status URL must be http(s), not {mask_url(status_url)!r}")
    store = _redis_store(guard)
    guard.flush()
    status = guard.refresh(raise_errors=True)
    window = find_test_window(guard.events(limit=10_000))
    if window is None:
        raise NoTestWindow(
            "no test-mode window in the audit log; start one with "
            "`maintenance-guard enable --mode test --reason ...`"
        )
    now = time.time()
    operations, records = tally_records(store.read_test_records(window.start), window)
    raw_counts = store.read_attempt_counts()
    records["dropped"] = raw_counts.get(DROPPED_FIELD, 0)
    counters = {
        "would_block_normal": total_counts(raw_counts, "would_block_normal"),
        "would_block_emergency": total_counts(raw_counts, "would_block_emergency"),
        "blocked": total_counts(raw_counts, "blocked"),
    }
    inflight = _read_inflight(store, now, grace, window)
    try:
        sessions = count_sessions(store.redis, session_prefix)
    except (ImportError, InvalidInput) as exc:
        sessions = {"key_prefix": session_prefix, "error": str(exc)}
    latency = measure_check_latency(guard, latency_calls) if latency_calls else None
    store.prune_presence(now - PRESENCE_FORGET_AFTER)
    presence = store.read_presence()
    propagated, live = judge_propagation(presence, status.version, now)
    verdicts = [
        propagated,
        judge_workers(_read_hash(store, "workers"), live),
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
    from .inputs import clean_actor
    from .store import event_fields

    actor = clean_actor(by)
    store = _redis_store(guard)
    deleted = store.clear_test_data()
    store.prune_presence(time.time() - PRESENCE_FORGET_AFTER)
    store.append_event(
        event_fields(
            "test_data_reset",
            actor=actor,
            reason="test-mode records and counters cleared",
            records=deleted,
        )
    )
    return deleted


# ---------------------------------------------------------------- helpers


def _redis_store(guard: MaintenanceGuard) -> RedisStore:
    from .store import RedisStore

    if not isinstance(guard.store, RedisStore):
        raise InvalidInput("the validation report needs the Redis store")
    return guard.store


def _read_inflight(store: RedisStore, now: float, grace: int, window: TestWindow) -> dict[str, Any]:
    from redis.exceptions import RedisError

    try:
        live = cast(
            list[tuple[str, float]],
            store.redis.zrangebyscore(store.inflight_key, now, "+inf", withscores=True),
        )
        details = cast(dict[str, str], store.redis.hgetall(store.key("inflight:jobs")))
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"cannot read in-flight jobs: {exc}") from exc
    return describe_inflight(live, details, now, grace, window)


def _read_hash(store: RedisStore, name: str) -> dict[str, str]:
    from redis.exceptions import RedisError

    try:
        return cast(dict[str, str], store.redis.hgetall(store.key(name)))
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"cannot read {name}: {exc}") from exc


def _worker_host(name: str, value: str) -> str:
    info = _parse_json(value)
    host = info.get("host") or info.get("hostname")
    if isinstance(host, str) and host:
        return host
    # Celery names workers "name@host"; a presence member is "host:pid".
    return name.split("@", 1)[-1]


def _parse_json(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _as_float(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(cast(Any, value))
    except (TypeError, ValueError):
        return None
