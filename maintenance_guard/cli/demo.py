"""`maintenance-guard demo`: the packaged demo web app and a Celery worker, on one Redis.

The demo runs `maintenance_guard.demo` (shipped in the wheel), so it works from any
directory. When it had to start the embedded redis-server itself, it stops it again on
exit; a server that was already running is left running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import FrameType

import click

from .. import embedded
from ..embedded import URL_ENV
from ..errors import InvalidInput
from ..urls import mask_url
from .errors import cli_errors


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(processes: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in processes:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--no-worker", is_flag=True, help="Start only the web app, no Celery worker.")
@click.option("--concurrency", type=click.IntRange(1, 16), default=2, show_default=True)
@click.pass_context
@cli_errors
def demo(ctx: click.Context, port: int, host: str, no_worker: bool, concurrency: int) -> None:
    """Run the demo web app and a Celery worker until Ctrl-C.

    Uses --redis-url / $MAINTENANCE_GUARD_REDIS_URL when set, else the embedded
    redis-server (also the Celery broker then), which it stops on exit if it started it.
    """
    obj = ctx.find_root().obj
    if not _port_free(host, port):
        raise InvalidInput(f"port {port} on {host} is in use; choose another with --port")
    url = obj.get("url") or os.environ.get(URL_ENV)
    started_embedded = False
    if not url:
        started_embedded = not embedded.status().running
        url = embedded.ensure_running()
    env = dict(os.environ)
    env[URL_ENV] = url
    env["MAINTENANCE_GUARD_KEY_PREFIX"] = obj["prefix"]
    env.setdefault("PYTHONUNBUFFERED", "1")

    processes: list[subprocess.Popen[bytes]] = []

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        if not no_worker:
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable, "-m", "celery", "-A", "maintenance_guard.demo.worker",
                        "worker", "--loglevel", "INFO", "--pool", "prefork",
                        "--concurrency", str(concurrency), "--hostname", "demo@%h",
                    ],
                    env=env,
                )
            )  # fmt: skip
        web = subprocess.Popen(
            [
                sys.executable, "-m", "flask",
                "--app", "maintenance_guard.demo.web:from_environment", "run",
                "--host", host, "--port", str(port), "--with-threads", "--no-reload",
                "--no-debugger",
            ],
            env=env,
        )  # fmt: skip
        processes.append(web)
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        deadline = time.monotonic() + 30
        while not _answers(f"{base}/api/maintenance/status"):
            if web.poll() is not None or time.monotonic() > deadline:
                click.echo("Error: the web app did not start; see its output above.", err=True)
                sys.exit(1)
            time.sleep(0.2)
        worker = (
            "not started (--no-worker)"
            if no_worker
            else "celery -A maintenance_guard.demo.worker worker"
        )
        shown = mask_url(url)
        is_embedded = url == embedded.embedded_url()
        redis_line = shown
        if started_embedded:
            redis_line += "  (embedded; started by the demo, stopped when it ends)"
        elif is_embedded:
            redis_line += (
                "  (embedded, already running; it stays running: "
                "`maintenance-guard embedded stop` stops it)"
            )
        cli = "maintenance-guard" if is_embedded else f"maintenance-guard --redis-url '{shown}'"
        if obj["prefix"] != "maintenance_guard":
            cli += f" --prefix {obj['prefix']}"
        click.echo(
            "\n".join(
                [
                    "",
                    "maintenance-guard demo is running.",
                    f"  App:              {base}/",
                    f"  Status page:      {base}/maintenance",
                    f"  Admin dashboard:  {base}/admin/maintenance  (sign in as 'admin' at /login)",
                    f"  Status API:       {base}/api/maintenance/status",
                    f"  Redis:            {redis_line}",
                    f"  Worker:           {worker}",
                    "",
                    "Try, in another terminal:",
                    f"  {cli} enable --reason 'Database upgrade' --duration 15m",
                    f"  curl -i -X POST {base}/api/captions",
                    "  (or press a 'Submit work' button on the app's page)",
                    f"  {cli} status",
                    f"  {cli} disable",
                    "",
                    "Press Ctrl-C to stop.",
                ]
            )
        )  # fmt: skip
        while True:
            for proc in processes:
                if proc.poll() is not None:
                    click.echo(f"Error: a demo process exited (code {proc.returncode}).", err=True)
                    sys.exit(1)
            time.sleep(0.5)
    except KeyboardInterrupt:
        click.echo("\nStopping the demo...")
    finally:
        _stop(processes)
        signal.signal(signal.SIGTERM, previous)
        if started_embedded and embedded.stop():
            click.echo("Stopped the embedded redis-server the demo had started.")
    click.echo("Demo stopped.")
