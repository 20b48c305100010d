"""`maintenance-guard demo` starts the example web app and a worker, answers, stops cleanly."""

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
    cli_env: dict[str, str], make_guard: Callable[..., MaintenanceGuard]
) -> None:
    guard = make_guard()
    with running_demo(cli_env, "--no-worker") as (base, demo):
        assert http("GET", f"{base}/maintenance")[0] == 200
        assert http("GET", f"{base}/api/items")[0] == 200
        guard.enable("normal", reason="demo check", duration=600)
        wait_for(lambda: http("POST", f"{base}/api/captions", {})[0] == 503, timeout=5)
        status, headers, body = http("POST", f"{base}/api/captions", {})
        assert int(headers["Retry-After"]) >= 1
        assert json.loads(body)["operation"] == "caption_generation"
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
    finally:
        subprocess.run(
            [sys.executable, "-c", "from maintenance_guard.embedded import stop; stop()"],
            env=env,
            timeout=30,
        )
        shutil.rmtree(home, ignore_errors=True)
