"""The CLI as a user runs it: a real process, a real Redis, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import free_port


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maintenance_guard.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_enable_status_disable_events(cli_env: dict[str, str]) -> None:
    done = run_cli(
        cli_env, "enable", "--reason", "DB upgrade", "--duration", "1h30m", "--by", "alice"
    )
    assert done.returncode == 0, done.stderr
    assert "Maintenance: ON (normal mode)" in done.stdout
    data = json.loads(run_cli(cli_env, "status", "--json").stdout)
    assert data["is_active"] is True and data["mode"] == "normal"
    assert data["estimated_duration"] == 5400 and data["reason"] == "DB upgrade"
    assert set(data) >= {
        "is_active",
        "mode",
        "reason",
        "estimated_duration",
        "started_at",
        "estimated_completion",
        "blocked_operations",
        "message",
        "active_jobs_count",
    }
    human = run_cli(cli_env, "status").stdout
    assert "Reason:      DB upgrade" in human and "alice" in human
    assert run_cli(cli_env, "disable", "--by", "bob").stdout.strip() == "Maintenance: OFF"
    events = run_cli(cli_env, "events").stdout.splitlines()
    assert "disabled" in events[0] and "bob" in events[0]
    assert "enabled" in events[1] and "alice" in events[1]
    as_json = json.loads(run_cli(cli_env, "events", "--json").stdout)
    assert [e["type"] for e in as_json] == ["disabled", "enabled"]


@pytest.mark.parametrize(
    "args",
    [
        ("enable", "--mode", "bogus", "--reason", "x"),
        ("enable", "--reason", ""),
        ("enable", "--reason", "x" * 501),
        ("enable", "--reason", "x", "--duration", "-5m"),
        ("enable", "--reason", "x", "--duration", "0"),
        ("enable", "--reason", "x", "--duration", "400d"),
        ("enable", "--reason", "x", "--auto-end"),
        ("enable", "--reason", "x", "--operation", "nope"),
        ("events", "--limit", "0"),
        ("nosuchcommand",),
    ],
)
def test_bad_input_prints_one_line_and_exits_2_changing_nothing(
    cli_env: dict[str, str], args: tuple[str, ...]
) -> None:
    done = run_cli(cli_env, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(run_cli(cli_env, "status", "--json").stdout)["is_active"] is False


def test_unreachable_redis_is_said_clearly(cli_env: dict[str, str]) -> None:
    env = dict(cli_env, MAINTENANCE_GUARD_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    done = run_cli(env, "status")
    assert done.returncode == 3
    assert done.stderr.startswith("Error: cannot reach Redis at redis://127.0.0.1:")
    assert len(done.stderr.strip().splitlines()) == 1


def test_embedded_default_is_started_once_and_reused_by_later_processes() -> None:
    home = Path(tempfile.mkdtemp(prefix="mg-home-", dir="/tmp"))
    env = {
        k: v for k, v in os.environ.items() if k not in ("MAINTENANCE_GUARD_REDIS_URL", "REDIS_URL")
    }
    env["MAINTENANCE_GUARD_HOME"] = str(home)
    try:
        first = run_cli(env, "enable", "--reason", "embedded", "--by", "alice")
        assert first.returncode == 0, first.stderr
        pid = (home / "redis.pid").read_text().strip()
        second = run_cli(env, "status", "--json")
        assert json.loads(second.stdout)["reason"] == "embedded"  # same server, same state
        assert (home / "redis.pid").read_text().strip() == pid
        assert (home / "redis.sock").exists()
    finally:
        stop = subprocess.run(
            [
                sys.executable,
                "-c",
                "from maintenance_guard import embedded; print(embedded.stop())",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert stop.stdout.strip() == "True", stop.stderr
