"""The embedded default's errors: one line, exit 2, the real cause, and no server left behind."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from maintenance_guard import embedded


def run_embedded_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with no Redis URL anywhere, so it uses the embedded server in ``home``."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("MAINTENANCE_GUARD_REDIS_URL", "REDIS_URL")
    }
    env["MAINTENANCE_GUARD_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "maintenance_guard.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_home_under_a_regular_file_is_one_line_exit_2_naming_the_cause(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory\n")
    done = run_embedded_cli(tmp_path / "file" / "home", "status")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("Error: cannot create ")
    assert "Not a directory" in done.stderr and "MAINTENANCE_GUARD_HOME" in done.stderr


def test_home_that_is_a_regular_file_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory\n")
    done = run_embedded_cli(tmp_path / "file", "status")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "is not a directory" in done.stderr, done.stderr


def test_home_whose_socket_path_is_too_long_is_refused_before_starting_a_server(
    tmp_path: Path,
) -> None:
    home = tmp_path / ("h" * (embedded.MAX_SOCKET_PATH - len(str(tmp_path))))
    done = run_embedded_cli(home, "status")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"over the {embedded.MAX_SOCKET_PATH} bytes a unix socket path may have" in done.stderr
    # Nothing was started: a redis-server would have bound a truncated path elsewhere.
    assert not home.exists() or not (home / "redis.pid").exists()


FAILING_SERVER = """#!/bin/sh
# Stands in for redis-server: daemonizes "successfully", logs why it stopped, and exits.
log=$(awk '$1 == "logfile" {print $2}' "$1")
pidfile=$(awk '$1 == "pidfile" {print $2}' "$1")
echo $$ > "$pidfile"
echo "4242:M 02 Dec 2026 14:44:41.885 * Server initialized" >> "$log"
echo "4242:M 02 Dec 2026 14:44:41.886 # Failed listening on the socket: Permission denied" >> "$log"
"""


def test_server_that_stops_at_start_is_reported_with_its_log_line_not_a_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text(FAILING_SERVER)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("MAINTENANCE_GUARD_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(embedded, "redis_server_binary", lambda: str(fake))
    with pytest.raises(embedded.EmbeddedServerError) as raised:
        embedded.ensure_running(timeout=60)  # returns long before: the server is gone
    message = str(raised.value)
    assert "Failed listening on the socket: Permission denied" in message
    assert "did not answer" not in message and "\n" not in message


def test_status_says_where_the_embedded_server_lives_and_whether_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_GUARD_HOME", str(tmp_path / "home"))
    before = embedded.status()
    assert before.running is False and before.pid is None
    assert before.socket == tmp_path / "home" / "redis.sock"
    assert before.url == f"unix://{before.socket}?db=0"
    try:
        assert embedded.ensure_running() == before.url
        after = embedded.status()
        assert after.running is True and after.pid is not None
    finally:
        assert embedded.stop() is True
