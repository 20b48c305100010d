"""The scheduled-window commands: `schedule` (and its `list`, `cancel`, `reschedule`)
and `update` (a progress note for the maintenance under way)."""

from __future__ import annotations

import json
import time

import click

from ..inputs import format_duration
from ..modes import MaintenanceMode
from ..windows import MaintenanceWindow, iso_z
from .errors import cli_errors
from .group import DURATION, default_actor, get_guard


def describe_window(window: MaintenanceWindow, now: float) -> str:
    """One readable line for a window."""
    starts = max(0.0, window.start_at - now)
    parts = [
        f"{window.id}: {iso_z(window.start_at)} to {iso_z(window.end_at)} "
        f"(in {format_duration(starts)}), {window.mode} mode",
        f"announced from {iso_z(window.announce_at)}" if window.notice else "announced",
    ]
    if window.drain_before:
        parts.append(f"new blocked work stops {format_duration(window.drain_before)} before")
    if window.auto_end:
        parts.append("ends by itself")
    return "; ".join(parts) + f"; {window.reason} (by {window.by})"


def describe_windows(windows: tuple[MaintenanceWindow, ...], now: float) -> list[str]:
    """Readable lines for the scheduled windows (none: no lines)."""
    if not windows:
        return []
    ordered = sorted(windows, key=lambda w: w.start_at)
    return ["Scheduled:"] + [f"  {describe_window(w, now)}" for w in ordered]


@click.group(invoke_without_command=True)
@click.option("--at", "start", default=None, help="Start, ISO 8601 with a zone: 2026-12-05T02:00Z.")
@click.option("--duration", type=DURATION, default=None, help="How long: 30m, 1h, 2h30m.")
@click.option(
    "--mode",
    type=click.Choice([MaintenanceMode.NORMAL.value, MaintenanceMode.TEST.value]),
    default="normal",
    show_default=True,
)
@click.option("--reason", default=None, help="Why (shown to users).")
@click.option("--notice", type=DURATION, default=None, help="Announce it this long before.")
@click.option("--auto-end", is_flag=True, help="End by itself after the duration.")
@click.option("--operation", "operations", multiple=True, help="Block only this operation.")
@click.option(
    "--drain-before", type=DURATION, default=None, help="Stop new blocked work this long before."
)
@click.option("--by", default=default_actor, help="Who schedules it (default: your login name).")
@click.pass_context
@cli_errors
def schedule(
    ctx: click.Context,
    start: str | None,
    duration: int | None,
    mode: str,
    reason: str | None,
    notice: int | None,
    auto_end: bool,
    operations: tuple[str, ...],
    drain_before: int | None,
    by: str | None,
) -> None:
    """Schedule maintenance to start (and end) by itself; or list, cancel, reschedule.

    \b
    maintenance-guard schedule --at 2026-12-05T02:00Z --duration 1h --reason TEXT
    maintenance-guard schedule list [--json]
    maintenance-guard schedule cancel ID
    maintenance-guard schedule reschedule ID --at 2026-12-06T02:00Z
    """
    if ctx.invoked_subcommand is not None:
        return
    missing = [
        n for n, v in (("--at", start), ("--duration", duration), ("--reason", reason)) if v is None
    ]
    if missing:
        raise click.UsageError(
            f"schedule needs {', '.join(missing)} (or a subcommand: list, cancel, reschedule)"
        )
    guard = get_guard(ctx)
    window = guard.windows.add(
        start,
        duration,  # type: ignore[arg-type]
        reason=reason,  # type: ignore[arg-type]
        mode=mode,
        notice=notice,
        auto_end=auto_end,
        operations=list(operations) or None,
        drain_before=drain_before,
        by=by,
    )
    click.echo(f"Scheduled {describe_window(window, guard.now())}")


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@cli_errors
def list_windows(ctx: click.Context, as_json: bool) -> None:
    """List the scheduled windows, soonest first."""
    guard = get_guard(ctx)
    windows = guard.windows.list()
    if as_json:
        click.echo(json.dumps([w.to_dict(include_admin=True) for w in windows], indent=2))
        return
    click.echo("\n".join(describe_windows(windows, time.time()) or ["Nothing is scheduled."]))


@schedule.command("cancel")
@click.argument("window_id")
@click.option("--by", default=default_actor, help="Who cancels it (default: your login name).")
@click.pass_context
@cli_errors
def cancel_window(ctx: click.Context, window_id: str, by: str | None) -> None:
    """Cancel a window that has not started."""
    window = get_guard(ctx).windows.cancel(window_id, by=by)
    click.echo(f"Cancelled {window.id} ({iso_z(window.start_at)}).")


@schedule.command("reschedule")
@click.argument("window_id")
@click.option("--at", "start", required=True, help="New start, ISO 8601 with a zone.")
@click.option("--by", default=default_actor, help="Who moves it (default: your login name).")
@click.pass_context
@cli_errors
def reschedule_window(ctx: click.Context, window_id: str, start: str, by: str | None) -> None:
    """Move a window that has not started (same duration and settings)."""
    guard = get_guard(ctx)
    window = guard.windows.reschedule(window_id, start, by=by)
    click.echo(f"Rescheduled {describe_window(window, guard.now())}")


@click.command()
@click.argument("text")
@click.option("--by", default=default_actor, help="Who writes it (default: your login name).")
@click.pass_context
@cli_errors
def update(ctx: click.Context, text: str, by: str | None) -> None:
    """Post a progress update ("Migration 60% done") to the status page's timeline."""
    status = get_guard(ctx).post_update(text, by=by)
    click.echo(f"Posted ({len(status.updates)} update(s) so far).")
