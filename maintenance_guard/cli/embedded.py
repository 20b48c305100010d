"""`maintenance-guard embedded status|stop`: the per-user embedded redis-server."""

from __future__ import annotations

import sys

import click

from .. import embedded as server
from .errors import EXIT_STORE, cli_errors


@click.group()
def embedded() -> None:
    """The embedded redis-server used when no Redis URL is configured."""


@embedded.command("status")
@cli_errors
def embedded_status() -> None:
    """Say whether the embedded server runs, and where (exit 3 when it does not)."""
    found = server.status()
    state = "running" if found.running else "not running"
    lines = [
        f"Embedded redis-server: {state}",
        f"  Socket:    {found.socket}",
        f"  URL:       {found.url}",
        f"  Directory: {found.home}",
    ]
    if found.pid is not None:
        lines.append(f"  PID:       {found.pid}")
    click.echo("\n".join(lines))
    if not found.running:
        sys.exit(EXIT_STORE)


@embedded.command("stop")
@cli_errors
def embedded_stop() -> None:
    """Shut the embedded server down (its data is not kept); nothing if it is not running."""
    sock = server.socket_path()
    if server.stop():
        click.echo(f"Stopped the embedded redis-server ({sock}).")
    else:
        click.echo(f"No embedded redis-server is running ({sock}).")
