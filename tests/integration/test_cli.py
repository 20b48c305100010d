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


SECRET = "S3cret"


@pytest.mark.parametrize(
    "url",
    [
        "redis://:S3cret@127.0.0.1:{port}/0",
        "redis://alice:S3cret@127.0.0.1:{port}/0",
        "rediss://:S3cret@127.0.0.1:{port}/0",
        "redis://127.0.0.1:{port}/0?password=S3cret",
        "redis+sentinel://:S3cret@127.0.0.1:{port}/mymaster/0",
        "unix://:S3cret@/nonexistent/redis.sock",
    ],
)
@pytest.mark.parametrize("given_as", ["flag", "env"])
def test_unreachable_redis_error_never_shows_the_password(
    cli_env: dict[str, str], url: str, given_as: str
) -> None:
    url = url.format(port=free_port())
    if given_as == "flag":
        done = run_cli(cli_env, "--redis-url", url, "status")
    else:
        done = run_cli(dict(cli_env, MAINTENANCE_GUARD_REDIS_URL=url), "status")
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert SECRET not in done.stdout + done.stderr
    assert done.stderr.startswith("Error: cannot reach Redis at ") and "***" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize(
    "url",
    [
        "redis://:S3cret@127.0.0.1:notaport/0",
        "redis+sentinel://:S3cret@127.0.0.1:notaport/mymaster/0",
        "http://:S3cret@127.0.0.1/0",
    ],
)
def test_unusable_redis_url_error_never_shows_the_password(
    cli_env: dict[str, str], url: str
) -> None:
    done = run_cli(cli_env, "--redis-url", url, "status")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert SECRET not in done.stdout + done.stderr
    assert done.stderr.startswith("Error: not a usable Redis URL ") and "***" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("recover", "--app", ":"),
        ("recover", "--app", "..x"),
        ("recover", "--app", "mg_raises_on_import:app"),
        ("recover", "--app", "mg_exits_on_import"),
        ("recover", "--app", "no_such_module_mg:app"),
        ("emergency", "--reason", "x", "--grace", "0", "--app", ":"),
        ("emergency", "--reason", "x", "--grace", "0", "--app", "mg_raises_on_import:app"),
        ("drain", "--timeout", "nan"),
        ("disable", "\n", " "),
        ("disable", "\x1b[31mred", "\u2028"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2_without_traceback(
    cli_env: dict[str, str], tmp_path: Path, args: tuple[str, ...]
) -> None:
    (tmp_path / "mg_raises_on_import.py").write_text('raise RuntimeError("boom\\nsecond line")\n')
    (tmp_path / "mg_exits_on_import.py").write_text("import sys\nsys.exit(4)\n")
    env = dict(cli_env, PYTHONPATH=f"{tmp_path}{os.pathsep}{cli_env['PYTHONPATH']}")
    done = run_cli(env, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""  # nothing drawn or printed before the error
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1, done.stderr
    assert not any(c in done.stderr for c in "\x1b\r\u2028"), done.stderr  # escaped
    assert json.loads(run_cli(cli_env, "status", "--json").stdout)["is_active"] is False


def test_emergency_whose_session_redis_is_unreachable_says_so_and_exits_non_zero(
    cli_env: dict[str, str],
) -> None:
    url = f"redis://:S3cret@127.0.0.1:{free_port()}/0"
    done = run_cli(
        cli_env, "emergency", "--reason", "leak", "--grace", "0", "--session-redis-url", url
    )
    assert done.returncode == 3, (done.stdout, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "sessions were NOT invalidated" in errors[0], done.stderr
    assert "redis://:***@127.0.0.1:" in errors[0]
    assert SECRET not in done.stdout + done.stderr
    # The emergency itself went ahead.
    assert json.loads(run_cli(cli_env, "status", "--json").stdout)["mode"] == "emergency"


def test_emergency_with_an_unusable_session_redis_url_masks_its_password(
    cli_env: dict[str, str],
) -> None:
    url = "redis://:S3cret@127.0.0.1:notaport/0"
    done = run_cli(cli_env, "emergency", "--reason", "x", "--session-redis-url", url)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert SECRET not in done.stdout + done.stderr and "***" in done.stderr
    assert json.loads(run_cli(cli_env, "status", "--json").stdout)["is_active"] is False


def test_pause_paused_resume_as_an_operator_runs_them(cli_env: dict[str, str]) -> None:
    done = run_cli(
        cli_env, "pause", "--queue", "reports", "--queue", "exports", "--for", "30m",
        "--reason", "reindex", "--beat", "--by", "alice",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # No worker of this app consumes them: a warning, not a silent success or a failure.
    assert done.stderr.startswith("warning: no running worker of this app consumes reports")
    assert "reports: until" in done.stdout and "beat skips it" in done.stdout
    listed = json.loads(run_cli(cli_env, "paused", "--json").stdout)
    assert [p["queue"] for p in listed["paused_queues"]] == ["reports", "exports"]
    assert listed["paused_queues"][0]["by"] == "alice" and listed["workers"] == {}
    status = json.loads(run_cli(cli_env, "status", "--json").stdout)
    assert status["is_active"] is False  # a pause is not maintenance
    assert [p["queue"] for p in status["paused_queues"]] == ["reports", "exports"]
    assert "Paused queues:" in run_cli(cli_env, "status").stdout
    resumed = run_cli(cli_env, "resume", "--queue", "reports", "--by", "bob")
    assert resumed.stdout.startswith("Resumed: reports") and "exports: until" in resumed.stdout
    assert "Nothing was paused" in run_cli(cli_env, "resume", "--queue", "reports").stdout
    assert run_cli(cli_env, "resume", "--all").stdout.startswith("Resumed: exports")
    assert run_cli(cli_env, "paused").stdout.strip() == "No queue is paused."
    types = [e["type"] for e in json.loads(run_cli(cli_env, "events", "--json").stdout)]
    assert types == ["queues_resumed", "queues_resumed", "queues_paused"]


@pytest.mark.parametrize(
    "args",
    [
        ("pause", "--reason", "no scope"),
        ("pause", "--queue", "a b", "--reason", "x"),
        ("pause", "--queue", "q", "--reason", ""),
        ("pause", "--queue", "q", "--reason", "x", "--for", "soon"),
        ("pause", "--queue", "q", "--reason", "x", "--worker", "w*"),
        ("resume",),
        ("resume", "--queue", "q", "--all"),
    ],
)
def test_bad_pause_input_prints_one_line_and_exits_2_changing_nothing(
    cli_env: dict[str, str], args: tuple[str, ...]
) -> None:
    done = run_cli(cli_env, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), done.stderr
    assert json.loads(run_cli(cli_env, "status", "--json").stdout)["paused_queues"] == []
