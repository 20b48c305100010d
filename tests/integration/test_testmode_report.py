"""Test mode end to end on a real Redis: nothing refused, every would-be refusal recorded,
and the validation report counts exactly the attempts made, from two processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from maintenance_guard import InvalidInput, MaintenanceActive, MaintenanceGuard
from maintenance_guard.inflight import InflightJob, InflightRegistry
from maintenance_guard.validation import (
    FAIL,
    PASS,
    NoTestWindow,
    build_test_report,
    reset_test_data,
)
from tests.helpers import wait_for
from tests.integration.testmode_support import second_process

# [operation, surface, target, user, is_admin]
REMOTE_ATTEMPTS: list[list[Any]] = (
    [["caption_generation", "publish", "tasks.caption", None, False]] * 7
    + [["image_processing", "worker", "tasks.resize", None, False]] * 4
    + [["read", "worker", "tasks.report", None, False]] * 3
    + [["job_creation", "publish", "tasks.job", "admin", True]] * 5  # admins: not recorded
)
LOCAL_ATTEMPTS: list[tuple[str | None, str, str, str | None]] = (
    [("caption_generation", "http", "api.caption", "bob")] * 5
    + [("user_data_modification", "http", "api.profile", "carol")] * 2
    + [("read", "http", "api.list", "bob")] * 6
    + [(None, "http", "api.unmapped", None)] * 2
    + [("read", "login", "login", "dave")] * 1
)


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maintenance_guard.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def make_local_attempts(guard: MaintenanceGuard) -> int:
    refused = 0
    for operation, surface, target, user in LOCAL_ATTEMPTS:
        try:
            guard.check(operation, surface=surface, target=target, user=user)
        except MaintenanceActive:
            refused += 1
    return refused


def expected_counts() -> dict[str, Counter[str]]:
    """Per operation: attempts, would_block_normal, would_block_emergency (non-admin)."""
    high_risk = {
        "caption_generation",
        "job_creation",
        "platform_operations",
        "batch_operations",
        "user_data_modification",
        "image_processing",
    }
    out: dict[str, Counter[str]] = {}
    rows = [(op, admin) for op, _s, _t, _u, admin in REMOTE_ATTEMPTS] + [
        (op, False) for op, _s, _t, _u in LOCAL_ATTEMPTS
    ]
    for op, admin in rows:
        if admin:
            continue
        c = out.setdefault(op or "-", Counter())
        c["attempts"] += 1
        c["would_block_normal"] += op in high_risk
        c["would_block_emergency"] += 1
    return out


def test_test_mode_refuses_nothing_and_report_counts_every_attempt_from_two_processes(
    make_guard: Callable[..., MaintenanceGuard], cli_env: dict[str, str]
) -> None:
    guard = make_guard()
    guard.enable("test", reason="rehearsal", by="alice")
    with second_process(cli_env, REMOTE_ATTEMPTS) as (_proc, remote):
        local_refused = make_local_attempts(guard)
        assert remote == {"refused": 0, "made": len(REMOTE_ATTEMPTS)}
        assert local_refused == 0
        guard.flush()
        # The helper's watcher reports the state version it has seen.
        wait_for(lambda: len(guard.store.read_presence()) >= 2, timeout=10)  # type: ignore[attr-defined]
        report = build_test_report(guard, grace=30, latency_calls=500)

    data = report.to_dict()
    assert data["window"]["ongoing"] is True
    assert data["window"]["started_by"] == "alice"
    got = {
        op: {
            k: v
            for k, v in t.items()
            if k in ("attempts", "would_block_normal", "would_block_emergency")
        }
        for op, t in data["operations"].items()
    }
    assert got == {op: dict(c) for op, c in expected_counts().items()}
    assert data["operations"]["caption_generation"]["by_surface"] == {
        "publish": {"attempts": 7, "would_block_normal": 7, "would_block_emergency": 7},
        "http": {"attempts": 5, "would_block_normal": 5, "would_block_emergency": 5},
    }
    assert data["operations"]["caption_generation"]["targets"] == {
        "tasks.caption": 7,
        "api.caption": 5,
    }
    assert data["operations"]["read"]["by_surface"]["login"]["attempts"] == 1
    assert data["totals"]["attempts"] == sum(c["attempts"] for c in expected_counts().values())
    verdicts = {v["check"]: v["result"] for v in data["verdicts"]}
    assert verdicts["state_propagated"] == PASS
    assert verdicts["records_complete"] == PASS
    assert verdicts["status_api_answered"] == "unknown"
    roles = {p["role"] for p in data["processes"]}
    assert "worker" in roles
    # The counters agree with the records.
    assert data["counters_since_reset"]["would_block_normal"]["caption_generation"] == 12
    lat = data["latency"]
    assert lat["calls"] == 500 and lat["current"]["mode"] == "test" and lat["off"]["mode"] is None
    assert 0 < lat["current"]["p50_us"] <= lat["current"]["p99_us"] <= lat["current"]["max_us"]
    # Nothing was refused anywhere: no blocked counter exists.
    assert guard.attempt_counts().get("blocked") is None


def test_report_window_ends_at_disable_and_excludes_attempts_after_it(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    guard = make_guard()
    guard.enable("test", reason="window one", by="alice")
    for _ in range(3):
        guard.check("batch_operations", surface="publish", target="tasks.batch")
    guard.flush()
    guard.disable(by="alice")
    # Later attempts with maintenance off record nothing; a later normal window is
    # not part of the test window either.
    guard.check("batch_operations", surface="publish", target="tasks.batch")
    guard.enable("normal", reason="real", by="alice")
    with pytest.raises(MaintenanceActive):
        guard.check("batch_operations", surface="publish", target="tasks.batch")
    guard.flush()
    report = build_test_report(guard, latency_calls=0)
    assert report.window.end is not None
    assert {op: t.attempts for op, t in report.operations.items()} == {"batch_operations": 3}
    assert report.latency is None
    # The real refusal is counted as blocked, per operation and surface.
    assert guard.attempt_counts()["blocked"] == {"batch_operations": {"publish": 1}}


def test_report_lists_inflight_jobs_outliving_the_grace_period(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    guard = make_guard()
    registry = InflightRegistry(guard.store)
    now = time.time()
    registry.start(InflightJob("old-1", "tasks.long", "batch_operations", "w1@host", 11, now - 120))
    guard.enable("test", reason="jobs", by="alice")
    registry.start(
        InflightJob("new-1", "tasks.short", "caption_generation", "w1@host", 12, time.time())
    )
    report = build_test_report(guard, grace=60, latency_calls=0)
    inflight = report.inflight
    assert inflight["count"] == 2
    assert inflight["outliving_grace"] == 1
    assert inflight["per_operation"] == {"batch_operations": 1, "caption_generation": 1}
    by_id = {j["id"]: j for j in inflight["jobs"]}
    assert by_id["old-1"]["outlives_grace"] and by_id["old-1"]["running_at_window_start"]
    assert by_id["old-1"]["task"] == "tasks.long"
    assert not by_id["new-1"]["outlives_grace"] and not by_id["new-1"]["running_at_window_start"]


def test_report_counts_the_non_admin_sessions_emergency_would_invalidate(
    make_guard: Callable[..., MaintenanceGuard], redis_client: redis.Redis, key_prefix: str
) -> None:
    guard = make_guard()
    prefix = f"{key_prefix}-session:"
    try:
        for i in range(5):
            redis_client.set(f"{prefix}user{i}", json.dumps({"_user_id": str(i)}))
        redis_client.set(f"{prefix}admin", json.dumps({"_user_id": "99", "is_admin": True}))
        guard.enable("test", reason="sessions", by="alice")
        report = build_test_report(guard, session_prefix=prefix, latency_calls=0)
        assert report.sessions["sessions"] == 6
        assert report.sessions["would_invalidate"] == 5
        assert report.sessions["admin_kept"] == 1
        # Read-only: every session is still there.
        assert len(list(redis_client.scan_iter(match=f"{prefix}*"))) == 6
    finally:
        keys = list(redis_client.scan_iter(match=f"{prefix}*"))
        if keys:
            redis_client.delete(*keys)


def test_propagation_verdict_fails_for_a_live_process_on_an_old_version(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    guard = make_guard()
    guard.enable("test", reason="lagging", by="alice")
    guard.store.record_presence(  # type: ignore[attr-defined]
        "otherhost:4242",
        {"pid": 4242, "host": "otherhost", "role": "web", "version": 0, "seen_at": time.time()},
    )
    report = build_test_report(guard, latency_calls=0)
    verdict = {v.name: v for v in report.verdicts}["state_propagated"]
    assert verdict.result == FAIL and "otherhost:4242" in verdict.detail
    assert report.verdict == FAIL


def test_report_without_test_window_and_bad_input_are_refused(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    guard = make_guard()
    with pytest.raises(NoTestWindow):
        build_test_report(guard, latency_calls=0)
    guard.enable("test", reason="bad input", by="alice")
    for bad in (-1, 10**9, 1.5, True, "30"):
        with pytest.raises(InvalidInput):
            build_test_report(guard, grace=bad, latency_calls=0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        build_test_report(guard, status_url="ftp://x", latency_calls=0)
    with pytest.raises(InvalidInput):
        build_test_report(guard, latency_calls=5)


def test_cli_report_json_text_and_reset_test_clear_only_test_data(
    make_guard: Callable[..., MaintenanceGuard], cli_env: dict[str, str]
) -> None:
    guard = make_guard()
    guard.enable("normal", reason="real", by="alice")
    with pytest.raises(MaintenanceActive):
        guard.check("image_processing", surface="http", target="api.upload")
    guard.enable("test", reason="cli", by="alice")
    for _ in range(4):
        guard.check("image_processing", surface="http", target="api.upload", user="u")
    guard.flush()

    out = run_cli(
        cli_env, "report", "--mode-test", "--json", "--grace", "10", "--latency-calls", "200"
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["operations"]["image_processing"]["attempts"] == 4
    assert data["inflight"]["grace_period"] == 10

    text = run_cli(cli_env, "report", "--mode-test", "--latency-calls", "0")
    assert text.returncode == 0, text.stderr
    assert "image_processing" in text.stdout and "Verdict:" in text.stdout

    bad = run_cli(cli_env, "report", "--mode-test", "--grace", "-5")
    assert bad.returncode == 2 and "grace" in bad.stderr

    # Without --mode-test, `report` is the emergency report (none has happened here).
    no_emergency = run_cli(cli_env, "report")
    assert no_emergency.returncode == 0, no_emergency.stderr
    assert "emergency" in no_emergency.stdout.lower()
    assert "Test-mode validation report" not in no_emergency.stdout

    status_json = json.loads(run_cli(cli_env, "status", "--json").stdout)
    assert status_json["attempt_counts"]["blocked"] == {"image_processing": {"http": 1}}
    assert status_json["attempt_counts"]["would_block_normal"] == {"image_processing": {"http": 4}}
    status_text = run_cli(cli_env, "status").stdout
    assert "Refused attempts:" in status_text and "normal would refuse" in status_text
    assert re.search(r"image_processing\s+4\s+\(http=4\)", status_text)

    reset = run_cli(cli_env, "reset-test", "--by", "carol")
    assert reset.returncode == 0, reset.stderr
    assert "4 recorded attempts" in reset.stdout
    counts = guard.attempt_counts()
    assert "would_block" not in counts and "would_block_normal" not in counts
    assert counts["blocked"] == {"image_processing": {"http": 1}}  # real refusals stay
    assert guard.events(limit=1)[0].type == "test_data_reset"
    assert guard.events(limit=1)[0].actor == "carol"
    after = build_test_report(guard, latency_calls=0)
    assert after.operations == {}


def test_reset_test_data_refuses_a_bad_actor_and_deletes_nothing(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    guard = make_guard()
    guard.enable("test", reason="keep", by="alice")
    guard.check("job_creation", surface="publish")
    guard.flush()
    with pytest.raises(InvalidInput):
        reset_test_data(guard, "x" * 10_000)
    assert build_test_report(guard, latency_calls=0).operations["job_creation"].attempts == 1


def test_test_mode_lets_logins_in_and_records_what_emergency_would_refuse(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    guard = make_guard()
    guard.enable("test", reason="logins", by="alice")
    assert guard.login_allowed(user="erin") is True
    assert guard.login_allowed(True, user="root") is True  # admins are never recorded
    report = build_test_report(guard, latency_calls=0)
    login = report.operations["-"].by_surface["login"]
    assert login == {"attempts": 1, "would_block_normal": 0, "would_block_emergency": 1}
    guard.enable("emergency", reason="now for real", by="alice")
    assert guard.login_allowed(user="erin") is False


def test_report_forgets_presence_of_processes_gone_for_a_day(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    guard = make_guard()
    guard.enable("test", reason="presence", by="alice")
    store = guard.store
    store.record_presence("gone:1", {"pid": 1, "version": 0, "seen_at": time.time() - 90_000})  # type: ignore[attr-defined]
    store.record_presence("recent:2", {"pid": 2, "version": 0, "seen_at": time.time() - 600})  # type: ignore[attr-defined]
    report = build_test_report(guard, latency_calls=0)
    presence = store.read_presence()  # type: ignore[attr-defined]
    assert "gone:1" not in presence and "recent:2" in presence
    # A process silent for 10 minutes is kept but is not live: it does not fail the verdict.
    assert {v.name: v.result for v in report.verdicts}["state_propagated"] != FAIL
