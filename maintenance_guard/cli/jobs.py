"""The commands for Celery work: `jobs` (in flight), `drain` and `deferred`."""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import datetime

import click

from ..deferred import DeferredQueue
from ..drain import DRAIN_POLICIES, drain
from ..errors import InvalidInput
from ..inflight import InflightJob, InflightRegistry
from ..inputs import format_duration
from .celery_app import APP_HELP, load_celery_app
from .errors import cli_errors
from .group import default_actor, get_guard

EXIT_DRAIN_TIMEOUT = 1
EXIT_DRAINED_WITH_LOSSES = 4


def _job_line(job: InflightJob, now: float) -> str:
    return (
        f"{job.id}  {job.name:<32} {job.operation or '-':<24} "
        f"{job.worker} pid={job.pid}  running {format_duration(max(0.0, now - job.started_at))}"
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@click.pass_context
@cli_errors
def jobs(ctx: click.Context, as_json: bool) -> None:
    """List the jobs in flight (oldest first)."""
    guard = get_guard(ctx)
    rows = InflightRegistry(guard.store, guard.settings.heartbeat_timeout).jobs()
    if as_json:
        click.echo(json.dumps([j.to_dict() for j in rows], indent=2))
        return
    if not rows:
        click.echo("No jobs in flight.")
        return
    now = time.time()
    click.echo(f"{len(rows)} job(s) in flight:")
    for job in rows:
        click.echo(_job_line(job, now))


def _finite_seconds(ctx: click.Context, param: click.Parameter, value: float) -> float:
    # FloatRange lets NaN through (every comparison with it is false).
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds", ctx, param)
    return value


@click.command(name="drain")
@click.option(
    "--timeout",
    type=click.FloatRange(0, 86_400),
    default=300.0,
    show_default=True,
    callback=_finite_seconds,
    help="Seconds to wait before giving up (exit 1).",
)
@click.option(
    "--operation",
    "operations",
    multiple=True,
    help="Wait only for jobs of this operation (repeatable).",
)
@click.option(
    "--queued",
    type=click.Choice(DRAIN_POLICIES),
    default="hold",
    show_default=True,
    help="Blocked messages published before maintenance: hold them back (they run after "
    "it) or wait for them to run (needs --app).",
)
@click.option("--app", "app_spec", envvar="MAINTENANCE_GUARD_CELERY_APP", help=APP_HELP)
@click.option("--by", default=default_actor, help="Who drains (default: your login name).")
@click.pass_context
@cli_errors
def drain_command(
    ctx: click.Context,
    timeout: float,
    operations: tuple[str, ...],
    queued: str,
    app_spec: str | None,
    by: str,
) -> None:
    """Wait until no blocked job runs and none can start, with a progress bar.

    Exit 0 when drained, 1 on timeout, 4 when drained but a job's worker died under it.
    """
    # Deferred: rich is a heavy import that only this progress bar needs.
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    guard = get_guard(ctx)
    for op in operations:
        guard.catalog.require(op)
    app = load_celery_app(app_spec)
    if queued == "wait" and app is None:
        raise InvalidInput("--queued wait needs the Celery app (--app module:attribute)")
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]draining[/bold]"),
        BarColumn(),
        TextColumn("{task.fields[left]} job(s) left"),
        TextColumn("oldest: {task.fields[oldest]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    first: list[int] = []

    with progress:
        bar = progress.add_task("drain", total=None, left="?", oldest="-")

        def show(rows: list[InflightJob], elapsed: float) -> None:
            if not first:
                first.append(len(rows))
            total = max(first[0], len(rows), 1)
            oldest = "-"
            if rows:
                job = rows[0]
                oldest = f"{job.name} ({format_duration(max(0.0, time.time() - job.started_at))})"
            progress.update(
                bar, total=total, completed=total - len(rows), left=len(rows), oldest=oldest
            )

        result = drain(
            guard,
            timeout,
            list(operations) or None,
            queued=queued,
            celery_app=app,
            by=by,
            progress=show,
        )
    now = time.time()
    if result.held:
        click.echo("Held back: blocked work published before maintenance runs after it.")
    for job in result.lost:
        click.echo(
            f"Lost: {job.id}  {job.name} on {job.worker}: its worker died while it ran "
            "(it did not finish)",
            err=True,
        )
    if result.drained:
        click.echo(f"Drained: no blocked job runs or can start (waited {result.elapsed:.1f}s).")
        if result.lost:
            sys.exit(EXIT_DRAINED_WITH_LOSSES)
        return
    click.echo(
        f"Timed out after {result.elapsed:.1f}s; {len(result.remaining)} job(s) still running:"
    )
    for job in result.remaining:
        click.echo(_job_line(job, now))
    if result.waiting:
        click.echo(f"{result.waiting} queued or reserved message(s) still to start.")
    if result.behind:
        click.echo(f"Processes that had not seen the hold: {', '.join(result.behind)}")
    sys.exit(EXIT_DRAIN_TIMEOUT)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@click.option(
    "--requeue-stuck",
    is_flag=True,
    help="Put entries a dead replayer left 'replaying' back at the head (may run twice).",
)
@click.pass_context
@cli_errors
def deferred(ctx: click.Context, as_json: bool, requeue_stuck: bool) -> None:
    """List submissions parked during maintenance (replayed in order when it ends)."""
    guard = get_guard(ctx)
    queue = DeferredQueue(guard.store)
    if requeue_stuck:
        moved = queue.requeue_stuck()
        if moved is None:
            click.echo("A replay is running now; nothing requeued.", err=True)
            sys.exit(1)
        click.echo(f"Requeued {len(moved)} stuck submission(s).")
    parked = queue.entries()
    replaying = queue.replaying()
    lost = [e for e in guard.events(limit=200, since=time.time() - 7 * 86_400)
            if e.type == "deferred_lost"]  # fmt: skip
    if as_json:
        click.echo(
            json.dumps(
                {
                    "deferred": [e.summary() for e in parked],
                    "replaying": [e.summary() for e in replaying],
                    "lost": [e.to_dict() for e in lost],
                },
                indent=2,
            )
        )
        return
    for event in lost:
        stamp = datetime.fromtimestamp(event.at).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(
            f"Warning: at {stamp} the store lost {event.fields.get('known', '?')} deferred "
            f"submission(s) of {event.fields.get('broker', '?')} (Redis restarted empty); "
            "they will not run",
            err=True,
        )
    if not parked and not replaying:
        click.echo("No deferred submissions.")
        return
    click.echo(f"{len(parked)} deferred submission(s), replayed in this order:")
    for entry in parked:
        stamp = datetime.fromtimestamp(entry.deferred_at).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(
            f"{stamp}  {entry.id}  {entry.task:<32} {entry.operation or '-':<24} "
            f"from {entry.source}"
        )
    for entry in replaying:
        click.echo(f"replaying now: {entry.id}  {entry.task}")
