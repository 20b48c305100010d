"""Test mode's pure parts: window finding, tallies, verdicts, the recorder, audit logging."""

from __future__ import annotations

import logging
import threading

import pytest

from maintenance_guard.events import (
    DROPPED_FIELD,
    AttemptRecord,
    AttemptRecorder,
    log_audit_event,
    summarise_counts,
    total_counts,
)
from maintenance_guard.store import AuditEvent
from maintenance_guard.validation import (
    FAIL,
    PASS,
    UNKNOWN,
    TestWindow,
    describe_inflight,
    find_test_window,
    judge_propagation,
    judge_workers,
    tally_records,
)


def ev(at: float, type_: str, mode: str | None = None, actor: str = "alice") -> AuditEvent:
    fields = {} if mode is None else {"mode": mode}
    return AuditEvent(f"{int(at * 1000)}-0", type_, at, actor, f"r{at}", fields)


def test_window_opens_on_test_mode_and_closes_on_disable() -> None:
    events = [ev(10, "enabled", "test"), ev(20, "updated", "test"), ev(30, "disabled")]
    assert find_test_window(reversed(events)) == TestWindow(10, 30, "alice", "r10")


def test_window_is_the_latest_one_and_still_open_while_test_mode_is_on() -> None:
    events = [
        ev(1, "enabled", "test"),
        ev(2, "disabled"),
        ev(3, "enabled", "normal"),
        ev(4, "mode_changed", "test", actor="bob"),
    ]
    assert find_test_window(events) == TestWindow(4, None, "bob", "r4")


def test_window_closes_on_mode_change_or_auto_end_and_ignores_other_events() -> None:
    assert find_test_window([ev(1, "enabled", "test"), ev(5, "mode_changed", "emergency")]) == (
        TestWindow(1, 5, "alice", "r1")
    )
    events = [ev(1, "enabled", "test"), ev(2, "test_data_reset"), ev(3, "auto_ended")]
    assert find_test_window(events) == TestWindow(1, 3, "alice", "r1")


def test_no_window_without_test_mode() -> None:
    assert find_test_window([ev(1, "enabled", "normal"), ev(2, "disabled")]) is None
    assert find_test_window([]) is None


def record(at: float, op: str | None, surface: str = "http", normal: bool = True) -> dict[str, str]:
    return AttemptRecord(surface, op, "t", "u", at, normal, True).to_fields()


def test_tally_counts_only_records_inside_the_window_per_operation_and_surface() -> None:
    window = TestWindow(10, 20, "a", "r")
    rows = [
        record(9, "job_creation"),
        record(10, "job_creation"),
        record(15, "job_creation", "publish"),
        record(15, "read", normal=False),
        record(16, None, normal=False),
        record(21, "job_creation"),
    ]
    tallies, summary = tally_records(rows, window)
    assert summary["records_read"] == 6 and summary["records_in_window"] == 4
    assert {op: (t.attempts, t.would_block_normal) for op, t in tallies.items()} == {
        "-": (1, 0),
        "job_creation": (2, 2),
        "read": (1, 0),
    }
    assert tallies["job_creation"].by_surface["publish"]["attempts"] == 1


def test_recorder_counts_each_mode_that_would_refuse_and_drops_beyond_its_buffer() -> None:
    recorder = AttemptRecorder()
    recorder.MAX_BUFFERED_RECORDS = 3  # type: ignore[misc]
    for _ in range(4):
        recorder.record(
            "worker",
            "read",
            target=None,
            user=None,
            would_block_normal=False,
            would_block_emergency=True,
        )
    counts, records = recorder.take()
    assert len(records) == 3
    assert counts == {
        "would_block:worker:read": 4,
        "would_block_emergency:worker:read": 4,
        DROPPED_FIELD: 1,
    }
    assert total_counts(counts, "would_block_emergency") == {"read": 4}
    assert summarise_counts(counts)["would_block"] == {"read": {"worker": 4}}
    assert recorder.take() == ({}, [])


def test_recorder_loses_no_count_under_concurrent_flushes() -> None:
    recorder = AttemptRecorder()
    taken: list[int] = []

    def hammer() -> None:
        for _ in range(5000):
            recorder.count("http", "job_creation")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        taken.append(recorder.take()[0].get("blocked:http:job_creation", 0))
    for t in threads:
        t.join()
    taken.append(recorder.take()[0].get("blocked:http:job_creation", 0))
    assert sum(taken) == 20_000


def test_propagation_verdict_ignores_stale_processes() -> None:
    presence = {
        "h:1": {"version": 5, "seen_at": 100.0, "role": "web"},
        "h:2": {"version": 4, "seen_at": 10.0, "role": "worker"},  # gone long ago
    }
    verdict, live = judge_propagation(presence, 5, now=101.0)
    assert verdict.result == PASS and [p["process"] for p in live] == ["h:1"]
    verdict, _ = judge_propagation(presence, 6, now=101.0)
    assert verdict.result == FAIL
    assert judge_propagation({}, 1, now=1.0)[0].result == UNKNOWN


def test_worker_verdict_needs_each_registered_worker_live_and_each_worker_registered() -> None:
    live = [{"process": "box1:10", "role": "celery"}, {"process": "box2:11", "role": "web"}]
    assert judge_workers({"w1@box1": "{}"}, live).result == PASS
    # A registered worker on a host with no live guard process: its state is unconfirmed.
    unseen = judge_workers({"w1@box1": "{}", "w9@box9": "{}"}, live)
    assert unseen.result == FAIL and "w9@box9" in unseen.detail
    # A live worker process on a host where no worker is registered.
    unregistered = judge_workers({"w2@box2": "{}"}, live)
    assert unregistered.result == FAIL and "box1:10" in unregistered.detail
    assert judge_workers({}, live).result == FAIL
    assert judge_workers(None, [{"process": "h:1", "role": "web"}]).result == UNKNOWN


def test_inflight_job_outlives_grace_only_when_it_ran_longer() -> None:
    details = {"a": '{"name": "t.a", "operation": "job_creation", "started_at": 0}'}
    out = describe_inflight(
        [("a", 999.0), ("b", 999.0)],
        details,
        now=100.0,
        grace=30,
        window=TestWindow(50, None, "x", "y"),
    )
    assert out["count"] == 2 and out["outliving_grace"] == 1
    assert out["per_operation"] == {"-": 1, "job_creation": 1}
    jobs = {j["id"]: j for j in out["jobs"]}
    assert jobs["a"]["outlives_grace"] and jobs["a"]["running_at_window_start"]
    assert jobs["b"]["elapsed_seconds"] is None and not jobs["b"]["outlives_grace"]


def test_audit_event_is_logged_with_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="maintenance_guard"):
        log_audit_event(
            {"type": "enabled", "actor": "alice", "reason": "db", "at": "12.5", "mode": "test"},
            "12500-0",
        )
        log_audit_event({"type": "state_restored", "actor": "mg", "reason": "", "at": "1"})
    first, second = caplog.records
    assert first.levelno == logging.INFO
    assert (first.mg_event, first.mg_actor, first.mg_reason, first.mg_at) == (  # type: ignore[attr-defined]
        "enabled",
        "alice",
        "db",
        12.5,
    )
    assert first.mg_mode == "test" and first.mg_event_id == "12500-0"  # type: ignore[attr-defined]
    assert "alice" in first.getMessage() and "db" in first.getMessage()
    assert second.levelno == logging.WARNING
