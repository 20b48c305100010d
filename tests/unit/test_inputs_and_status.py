"""Input validation and the status value's JSON shape (no servers)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maintenance_guard import InvalidInput, MaintenanceMode, MaintenanceStatus
from maintenance_guard.inputs import clean_reason, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("30m", 1800),
        ("1h30m", 5400),
        ("2d", 172800),
        (" 1h 5s ", 3605),
        (45, 45),
    ],
)
def test_duration_forms(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-5, "negative"),
        ("-5", "negative"),
        (0, "at least 1"),
        ("0s", "at least 1"),
        (10**9, "too long"),
        ("8d", "too long"),
        ("1.5", "whole"),
        (float("nan"), "whole"),
        ("soon", "not understood"),
        ("1x", "not understood"),
        (True, "number"),
        (None, "number"),
    ],
)
def test_bad_durations_are_refused_with_a_clear_message(value: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_duration(value)


def test_reason_strips_control_characters_and_caps_length() -> None:
    assert clean_reason("  DB\x00 upgrade\n\tnow\x1b[31m ") == "DB upgrade now [31m"
    assert len(clean_reason("x" * 500)) == 500
    with pytest.raises(InvalidInput, match="at most 500"):
        clean_reason("x" * 501)
    with pytest.raises(InvalidInput, match="at most 500"):
        clean_reason("x" * 10_000_000)
    for empty in ("", "   ", "\x00\x01", None):
        with pytest.raises(InvalidInput, match="must not be empty"):
            clean_reason(empty)
    with pytest.raises(InvalidInput, match="must be text"):
        clean_reason(42)


@given(st.text(max_size=600))
def test_clean_reason_never_returns_control_characters_or_raises_other_errors(text: str) -> None:
    try:
        cleaned = clean_reason(text)
    except InvalidInput:
        return
    assert cleaned and len(cleaned) <= 500
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in cleaned)


@given(st.integers(min_value=1, max_value=7 * 86400))
def test_format_and_parse_duration_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_status_to_dict_has_the_contract_shape() -> None:
    status = MaintenanceStatus(
        mode=MaintenanceMode.NORMAL,
        reason="Database optimization",
        started_at=1736935200.0,  # 2025-01-15T10:00:00Z
        estimated_duration=3600,
        enabled_by="alice",
        blocked_operations=("caption_generation", "job_creation"),
        active_jobs_count=3,
        version=7,
    )
    data = status.to_dict(now=1736935200.0 + 600)
    assert data["is_active"] is True
    assert data["mode"] == "normal"
    assert data["started_at"] == "2025-01-15T10:00:00Z"
    assert data["estimated_completion"] == "2025-01-15T11:00:00Z"
    assert data["blocked_operations"] == ["caption_generation", "job_creation"]
    assert data["message"].startswith("System maintenance in progress.")
    assert data["active_jobs_count"] == 3
    assert data["retry_after"] == 3000
    assert "enabled_by" not in data  # admin names only in the admin view
    admin = status.to_dict(now=1736935200.0, include_admin=True)
    assert admin["enabled_by"] == "alice" and admin["version"] == 7


def test_inactive_status_shape() -> None:
    data = MaintenanceStatus().to_dict(now=0)
    assert data["is_active"] is False and data["mode"] is None
    assert data["blocked_operations"] == []


def test_overrun_and_retry_after_floor() -> None:
    status = MaintenanceStatus(
        mode=MaintenanceMode.NORMAL, reason="x", started_at=100.0, estimated_duration=60
    )
    assert not status.overrunning(150)
    assert status.overrunning(161)
    assert status.retry_after(161) == 1  # never below 1
    assert status.retry_after(159.2) == 1
    assert MaintenanceStatus(mode=MaintenanceMode.NORMAL).retry_after(0, default=300) == 300


def test_fields_round_trip() -> None:
    status = MaintenanceStatus(
        mode=MaintenanceMode.TEST,
        reason="r",
        started_at=1.5,
        estimated_duration=60,
        enabled_by="bob",
        auto_end=True,
        blocked_operations=("job_creation",),
        changed_at=2.5,
    )
    fields = status.to_fields()
    fields["version"] = "4"
    back = MaintenanceStatus.from_fields(fields)
    assert back.mode is MaintenanceMode.TEST and back.reason == "r" and back.version == 4
    assert back.auto_end and back.estimated_duration == 60 and back.enabled_by == "bob"
    assert back.blocked_operations == ("job_creation",)
