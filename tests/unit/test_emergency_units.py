"""Emergency and session pieces that need no server: argument checks, records, report text."""

from __future__ import annotations

import pytest

from maintenance_guard import InvalidInput
from maintenance_guard.emergency import (
    QueueSpec,
    TerminatedJob,
    json_safe,
    render_report_text,
    validate_emergency_args,
)
from maintenance_guard.sessions import admin_predicate


def test_emergency_arguments_are_cleaned_and_bounded() -> None:
    assert validate_emergency_args(" leak\x00 ", "1m", 0, None) == ("leak", 60, 0, "unknown")
    for bad in (
        {"grace_period": -1},
        {"grace_period": 3601},
        {"kill_after": 601},
        {"grace_period": True},
        {"reason": " "},
    ):
        args = {"reason": "x", "grace_period": 1, "kill_after": 1, "by": "a", **bad}
        with pytest.raises(InvalidInput):
            validate_emergency_args(
                args["reason"], args["grace_period"], args["kill_after"], args["by"]
            )


def test_queue_spec_reads_celery_active_queues_and_defaults_to_the_queue_name() -> None:
    full = {"name": "q1", "exchange": {"name": "ex", "type": "topic"}, "routing_key": "rk"}
    assert QueueSpec.from_celery(full) == QueueSpec("q1", "ex", "topic", "rk")
    assert QueueSpec.from_celery({"name": "q2"}) == QueueSpec("q2", "q2", "direct", "q2")


def test_terminated_job_round_trips_and_tolerates_unknown_fields() -> None:
    job = TerminatedJob(
        "id1", "t", "batch_operations", [1], {"a": 2}, "w@h", 42, 1.0, 2.0, "SIGTERM", True
    )
    assert TerminatedJob.from_dict({**job.to_dict(), "future_field": 1}) == job


def test_arguments_that_are_not_json_are_kept_as_their_repr() -> None:
    assert json_safe([1, "a"]) == [1, "a"]
    assert json_safe({1, 2}) == {"unserializable_repr": "{1, 2}"}


def test_admin_predicate_by_flag_and_by_user_id() -> None:
    by_flag = admin_predicate()
    assert by_flag({"is_admin": True}) and not by_flag({"is_admin": 0}) and not by_flag({})
    by_id = admin_predicate(None, admin_user_ids=[7, "9"])
    assert by_id({"_user_id": "7"}) and by_id({"_user_id": 9}) and not by_id({"is_admin": True})


def test_report_text_shows_jobs_sessions_checks_recovery_and_timeline() -> None:
    report = {
        "emergency": {
            "id": "e1",
            "reason": "leak",
            "by": "alice",
            "activated_at": 0.5,
            "grace_period": 30,
            "kill_after": 10,
            "running_at_start": 2,
            "consumers_cancelled": {"w@h": ["celery"]},
            "finished_in_grace": [{"id": "a", "name": "short", "worker": "w@h"}],
            "terminated": [
                TerminatedJob(
                    "b", "long", "batch_operations", [1], {}, "w@h", 9, 1.0, 2.0, "SIGTERM", True
                ).to_dict()
            ],
            "not_stopped": [],
            "seconds_to_gone": 0.25,
            "sessions": {"invalidated": 90, "kept_admin": 10, "seconds": 0.1},
            "warnings": [],
        },
        "timeline": [
            {"at": 1.0, "type": "emergency_activated", "actor": "alice", "reason": "leak"}
        ],
        "blocked_attempts": {"caption_generation": {"publish": 3, "http": 2}},
        "deactivated": {"at": 5.0, "by": "bob", "type": "disabled"},
        "checks": {"ok": False, "warnings": ["worker w@h does not consume again"]},
        "recovery": {"b": {"state": "recovered", "new_id": "b2"}},
        "redeliveries_dropped": {},
        "active": False,
    }
    text = render_report_text(report)
    for expected in (
        "Emergency e1: leak",
        "by alice",
        "paused w@h: celery",
        "1 finished in grace",
        "1 terminated",
        "0.250s after the grace period",
        "terminated b  long [batch_operations]",
        "recovered as b2",
        "90 non-admin invalidated, 10 admin kept",
        "caption_generation: 5 (http 2, publish 3)",
        "Deactivated",
        "by bob",
        "! worker w@h does not consume again",
        "emergency_activated    by alice: leak",
    ):
        assert expected in text, (expected, text)
    assert render_report_text({"emergency": None}) == "No emergency has been recorded."
