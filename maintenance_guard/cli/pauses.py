"""The queue pause commands: `pause`, `resume` and `paused`."""

from __future__ import annotations

import json
import time

import click

from ..inputs import format_duration
from ..pauses import QueuePause
from ..pausing import worker_queues
from ..status import iso_utc, pause_dict
from .errors import cli_errors
from .group import DURATION, default_actor, get_guard


def describe_pause(pause: QueuePause, now: float) -> str:
    """One readable line for a queue pause."""
    if pause.ends_at is None:
        until = "until resumed"
    else:
        until = (
            f"until {iso_utc(pause.ends_at)} (in {format_duration(max(0, pause.ends_at - now))})"
        )
    scope = f"workers {', '.join(pause.workers)}" if pause.workers else "all workers"
    beat = ", beat skips it" if pause.beat else ""
    return f"{pause.queue}: {until}, {scope}{beat}; {pause.reason} (by {pause.by})"


def describe_pauses(pauses: tuple[QueuePause, ...], now: float) -> list[str]:
    """Readable lines for the pauses in effect (none: no lines)."""
    if not pauses:
        return []
    return ["Paused queues:"] + [f"  {describe_pause(p, now)}" for p in pauses]


@click.command()
@click.option(
    "--queue", "queues", multiple=True, help="A queue to pause (repeatable; at least one)."
)
@click.option(
    "--worker",
    "workers",
    multiple=True,
    help="Pause it only on this worker (hostname, repeatable); default: every worker.",
)
@click.option(
    "--for", "duration", type=DURATION, default=None, help="End by itself after: 90s, 30m, 2h."
)
@click.option("--reason", required=True, help="Why (for the audit log and status).")
@click.option("--beat", is_flag=True, help="Beat skips entries bound for these queues meanwhile.")
@click.option("--by", default=default_actor, help="Who is pausing (default: your login name).")
@click.pass_context
@cli_errors
def pause(
    ctx: click.Context,
    queues: tuple[str, ...],
    workers: tuple[str, ...],
    duration: int | None,
    reason: str,
    beat: bool,
    by: str | None,
) -> None:
    """Stop this app's workers consuming queues, fleet-wide, until resumed.

    Messages stay in the broker; a worker that starts during the pause does not consume
    the queue; messages a worker had already fetched go back to the broker.
    """
    guard = get_guard(ctx)
    result = guard.pause_queues(
        queues, reason=reason, by=by, duration=duration, workers=workers or None, beat=beat
    )
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo("\n".join(describe_pauses(result.pauses, guard.now())))


@click.command()
@click.option("--queue", "queues", multiple=True, help="A queue to resume (repeatable).")
@click.option("--all", "everything", is_flag=True, help="Resume every paused queue.")
@click.option("--by", default=default_actor, help="Who is resuming (default: your login name).")
@click.pass_context
@cli_errors
def resume(ctx: click.Context, queues: tuple[str, ...], everything: bool, by: str | None) -> None:
    """Consume paused queues again."""
    guard = get_guard(ctx)
    resumed = guard.resume_queues(queues or None, everything=everything, by=by)
    if resumed:
        click.echo(f"Resumed: {', '.join(resumed)}")
    else:
        click.echo("Nothing was paused; nothing changed.")
    left = guard.paused_queues()
    if left:
        click.echo("\n".join(describe_pauses(left, guard.now())))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON: pauses and workers.")
@click.pass_context
@cli_errors
def paused(ctx: click.Context, as_json: bool) -> None:
    """List the paused queues, and what each worker consumes."""
    guard = get_guard(ctx)
    pauses = guard.paused_queues()
    workers = worker_queues(guard) or {}
    if as_json:
        data = {
            "paused_queues": [pause_dict(p, include_admin=True) for p in pauses],
            "workers": workers,
        }
        click.echo(json.dumps(data, indent=2))
        return
    lines = describe_pauses(pauses, time.time()) or ["No queue is paused."]
    if workers:
        lines.append("Workers:")
        for hostname, info in sorted(workers.items()):
            consuming = [q for q in info["consuming"] if q not in info["paused"]]
            lines.append(
                f"  {hostname}: consuming {', '.join(consuming) or 'nothing'}"
                + (f"; paused {', '.join(info['paused'])}" if info["paused"] else "")
            )
    click.echo("\n".join(lines))
