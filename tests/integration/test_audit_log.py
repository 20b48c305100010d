"""The audit log on a real Redis: every state change is in the stream with actor, reason and
time, is logged on the ``maintenance_guard`` logger with structured fields, and reads back
through `guard.events()` and `maintenance-guard events [--since] [--json]`."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import redis

from maintenance_guard import MaintenanceGuard
from maintenance_guard.store import event_fields
from tests.helpers import wait_for


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maintenance_guard.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_state_change_is_in_the_stream_and_on_the_logger(
    make_guard: Callable[..., MaintenanceGuard], caplog: pytest.LogCaptureFixture
) -> None:
    guard = make_guard()
    before = time.time()
    with caplog.at_level(logging.INFO, logger="maintenance_guard"):
        guard.enable("test", reason="rehearsal", by="alice")
        guard.enable("test", reason="rehearsal, longer", duration="1h", by="alice")
        guard.enable("normal", reason="db upgrade", by="bob")
        guard.disable(by="carol", reason="done")
        guard.disable(by="carol")  # a no-op: not a change, not logged
        guard.store.append_event(
            event_fields("emergency_step", actor="dave", reason="revoked 2 jobs", jobs=2)
        )
    events = list(reversed(guard.events()))
    assert [(e.type, e.actor, e.reason) for e in events] == [
        ("enabled", "alice", "rehearsal"),
        ("updated", "alice", "rehearsal, longer"),
        ("mode_changed", "bob", "db upgrade"),
        ("disabled", "carol", "done"),
        ("emergency_step", "dave", "revoked 2 jobs"),
    ]
    assert all(before - 1 <= e.at <= time.time() + 1 for e in events)
    assert events[2].fields["mode"] == "normal" and events[2].fields["previous_mode"] == "test"

    logged = [r for r in caplog.records if hasattr(r, "mg_event")]
    assert [r.mg_event for r in logged] == [e.type for e in events]  # type: ignore[attr-defined]
    for record, event in zip(logged, events, strict=True):
        assert record.mg_actor == event.actor  # type: ignore[attr-defined]
        assert record.mg_reason == event.reason  # type: ignore[attr-defined]
        assert record.mg_at == pytest.approx(event.at)  # type: ignore[attr-defined]
        assert record.mg_event_id == event.id  # type: ignore[attr-defined]
    assert logged[2].mg_mode == "normal"  # type: ignore[attr-defined]
    assert logged[4].levelno == logging.WARNING  # emergency steps stand out


def test_auto_end_and_state_restore_are_audited_and_logged(
    make_guard: Callable[..., MaintenanceGuard],
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = make_guard()
    with caplog.at_level(logging.INFO, logger="maintenance_guard"):
        # Redis' clock decides the end (see test_clock_skew.py): a real second.
        guard.enable("normal", reason="short", duration=1, auto_end=True, by="alice")
        guard.start()
        wait_for(lambda: guard.events(limit=1)[0].type == "auto_ended", timeout=10)

        guard.enable("normal", reason="lost", by="alice")
        redis_client.delete(guard.store.state_key)  # type: ignore[attr-defined]
        wait_for(lambda: guard.events(limit=1)[0].type == "state_restored", timeout=10)
    ended, restored = guard.events(limit=3)[2], guard.events(limit=1)[0]
    assert ended.type == "auto_ended" and ended.actor == "maintenance-guard" and ended.reason
    assert restored.actor == "maintenance-guard" and "lost" in restored.reason
    types = [getattr(r, "mg_event", None) for r in caplog.records]
    assert "auto_ended" in types and "state_restored" in types
    warning = next(r for r in caplog.records if getattr(r, "mg_event", None) == "state_restored")
    assert warning.levelno == logging.WARNING


def test_cli_events_since_and_json(
    make_guard: Callable[..., MaintenanceGuard],
    cli_env: dict[str, str],
    redis_client: redis.Redis,
) -> None:
    guard = make_guard()
    # An event from two hours ago (explicit stream id), then fresh ones.
    old_ms = int((time.time() - 7200) * 1000)
    redis_client.xadd(
        guard.store.events_key,  # type: ignore[attr-defined]
        event_fields("enabled", actor="old", reason="long ago", at=old_ms / 1000, mode="normal"),
        id=f"{old_ms}-0",
    )
    guard.enable("test", reason="now", by="alice")
    guard.disable(by="alice")

    out = run_cli(cli_env, "events", "--since", "1h", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["type"], r["actor"]) for r in rows] == [("disabled", "alice"), ("enabled", "alice")]
    assert rows[1]["reason"] == "now" and rows[1]["at"].endswith("Z")

    everything = run_cli(cli_env, "events")
    assert everything.returncode == 0
    assert "long ago" in everything.stdout and "now" in everything.stdout

    for bad in (["--since", "soon"], ["--since", "-1h"], ["--limit", "0"]):
        refused = run_cli(cli_env, "events", *bad)
        assert refused.returncode == 2, (bad, refused.stderr)
        assert refused.stderr.startswith("Error:")
