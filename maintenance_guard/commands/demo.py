"""`maintenance-guard demo`: the example web app and a Celery worker, on one Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

import click

from ..cli import cli_errors, main
from ..embedded import URL_ENV, resolve_url
from ..errors import InvalidInput

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


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


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--no-worker", is_flag=True, help="Start only the web app, no Celery worker.")
@click.option("--concurrency", type=click.IntRange(1, 16), default=2, show_default=True)
@click.pass_context
@cli_errors
def demo(ctx: click.Context, port: int, host: str, no_worker: bool, concurrency: int) -> None:
    """Run the example web app and a Celery worker until Ctrl-C.

    Uses --redis-url / $MAINTENANCE_GUARD_REDIS_URL when set, else the embedded
    redis-server (also the Celery broker then).
    """
    obj = ctx.find_root().obj
    if not _port_free(host, port):
        raise InvalidInput(f"port {port} on {host} is in use; choose another with --port")
    url = resolve_url(obj.get("url"))
    env = dict(os.environ)
    env[URL_ENV] = url
    env["MAINTENANCE_GUARD_KEY_PREFIX"] = obj["prefix"]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
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
                        sys.executable, "-m", "celery", "-A", "workers", "worker",
                        "--loglevel", "INFO", "--pool", "prefork",
                        "--concurrency", str(concurrency), "--hostname", "demo@%h",
                    ],
                    cwd=PROJECT_ROOT,
                    env=env,
                )
            )  # fmt: skip
        web = subprocess.Popen(
            [
                sys.executable, "-m", "flask", "--app", "workers.web:app", "run",
                "--host", host, "--port", str(port), "--with-threads", "--no-reload",
                "--no-debugger",
            ],
            cwd=PROJECT_ROOT,
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
        worker = "not started (--no-worker)" if no_worker else "celery -A workers worker"
        cli = f"maintenance-guard --redis-url '{url}'"
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
                    f"  Redis:            {url}",
                    f"  Worker:           {worker}",
                    "",
                    "Try, in another terminal:",
                    f"  {cli} enable --reason 'Database upgrade' --duration 15m",
                    f"  curl -i -X POST {base}/api/captions",
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
    click.echo("Demo stopped.")
