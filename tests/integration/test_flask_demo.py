"""`maintenance-guard demo` starts the packaged demo web app and a worker, answers, stops
cleanly, and stops the embedded redis-server only if it started it
(`maintenance-guard embedded status|stop` for the rest)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from maintenance_guard import MaintenanceGuard
from tests.e2e.flask_support import http
from tests.helpers import free_port, wait_for
from tests.integration import celery_support
from tests.integration.celery_support import Broker, new_queue

redis_broker = celery_support.redis_broker

ROOT = Path(__file__).resolve().parent.parent.parent


class DemoProcess:
    """A running `maintenance-guard demo` whose combined output is collected as it comes."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 60) -> str:
        """SIGTERM, wait for the exit, and return everything it printed."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        self._reader.join(10)
        return self.output


@contextmanager
def running_demo(env: dict[str, str], *args: str) -> Iterator[tuple[str, DemoProcess]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "maintenance_guard.cli", "demo", "--port", str(port), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    demo = DemoProcess(proc)
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, demo.output
            # the banner comes once the demo itself has seen its web app answer
            return "Press Ctrl-C to stop." in demo.output

        wait_for(up, timeout=60, interval=0.2)
        yield base, demo
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_demo_serves_the_app_and_follows_the_switch(
    cli_env: dict[str, str], make_guard: Callable[..., MaintenanceGuard], redis_broker: Broker
) -> None:
    guard = make_guard()
    # Submissions made before the demo sees the switch land in this test's own queue.
    env = {**cli_env, "MAINTENANCE_GUARD_DEMO_QUEUE": new_queue(redis_broker)}
    with running_demo(env, "--no-worker") as (base, demo):
        assert http("GET", f"{base}/maintenance")[0] == 200
        assert http("GET", f"{base}/api/items")[0] == 200
        guard.enable("normal", reason="demo check", duration=600)
        wait_for(lambda: http("POST", f"{base}/api/captions", {})[0] == 503, timeout=5)
        status, headers, body = http("POST", f"{base}/api/captions", {})
        assert int(headers["Retry-After"]) >= 1
        assert json.loads(body)["operation"] == "caption_generation"
        # The page's "Submit work" forms post to HTML endpoints: a browser sees the HTML page.
        status, headers, body = http(
            "POST", f"{base}/work/captions", headers={"Accept": "text/html"}
        )
        assert status == 503 and headers["Content-Type"].startswith("text/html")
        assert "Caption generation is temporarily unavailable" in body.decode()
        home = http("GET", f"{base}/")[2].decode()
        assert 'action="/work/captions"' in home and 'action="/api/' not in home
        output = demo.stop(timeout=30)
    assert demo.proc.returncode == 0
    assert "Status page:" in output and "Demo stopped." in output


def test_demo_refuses_a_busy_port_with_exit_2(cli_env: dict[str, str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "maintenance_guard.cli", "demo", "--port", str(port)],
            cwd=ROOT,
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert "in use" in result.stderr


@pytest.mark.slow
def test_demo_on_a_bare_machine_runs_submitted_work_on_its_worker(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MAINTENANCE_GUARD_REDIS_URL", "CELERY_BROKER_URL", "REDIS_URL")
    }
    home = Path("/tmp") / f"mg-demo-{tmp_path.name[-20:]}"  # unix socket paths are short
    env["MAINTENANCE_GUARD_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT)
    try:
        with running_demo(env, "--concurrency", "1") as (base, demo):
            status, _, body = http("POST", f"{base}/api/captions", {})
            assert status == 202, body
            task_id = json.loads(body)["task_id"]

            def done() -> bool:
                state = json.loads(http("GET", f"{base}/api/tasks/{task_id}")[2])["state"]
                return bool(state == "SUCCESS")

            wait_for(done, timeout=60, interval=0.3)
            output = demo.stop(timeout=60)
        assert demo.proc.returncode == 0
        assert "redis.sock" in output and "Demo stopped." in output
        assert "started by the demo, stopped when it ends" in output
        assert "Stopped the embedded redis-server the demo had started." in output
        # Nothing is left running.
        status = embedded_cli(env, "status")
        assert status.returncode == 3 and "not running" in status.stdout
    finally:
        embedded_cli(env, "stop")
        shutil.rmtree(home, ignore_errors=True)


def embedded_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maintenance_guard.cli", "embedded", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_demo_leaves_an_embedded_server_it_did_not_start_running_and_says_how_to_stop_it(
    tmp_path: Path,
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MAINTENANCE_GUARD_REDIS_URL", "CELERY_BROKER_URL", "REDIS_URL")
    }
    home = Path("/tmp") / f"mg-emb-{tmp_path.name[-20:]}"
    env["MAINTENANCE_GUARD_HOME"] = str(home)
    try:
        assert embedded_cli(env, "status").returncode == 3
        # Any command without a URL starts the embedded server; it is running before the demo.
        started = subprocess.run(
            [sys.executable, "-m", "maintenance_guard.cli", "status"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode == 0, started.stderr
        status = embedded_cli(env, "status")
        assert status.returncode == 0 and "running" in status.stdout
        assert str(home / "redis.sock") in status.stdout and "PID:" in status.stdout
        with running_demo(env, "--no-worker") as (base, demo):
            assert http("GET", f"{base}/maintenance")[0] == 200
            output = demo.stop(timeout=30)
        assert demo.proc.returncode == 0
        assert "already running; it stays running" in output
        assert "maintenance-guard embedded stop" in output
        assert embedded_cli(env, "status").returncode == 0  # still running
        stopped = embedded_cli(env, "stop")
        assert stopped.returncode == 0 and "Stopped the embedded redis-server" in stopped.stdout
        assert embedded_cli(env, "status").returncode == 3
        again = embedded_cli(env, "stop")
        assert again.returncode == 0 and "No embedded redis-server is running" in again.stdout
    finally:
        embedded_cli(env, "stop")
        shutil.rmtree(home, ignore_errors=True)
