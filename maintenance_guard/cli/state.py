"""The state commands: `status`, `enable`, `disable` and `events` (the audit log)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import click

from ..emergency import watch_deactivation
from ..inputs import format_duration
from ..modes import MaintenanceMode
from ..status import MaintenanceStatus, iso_utc
from .errors import cli_errors
from .group import DURATION, default_actor, get_guard
from .pauses import describe_pauses
from .schedule import describe_windows


def describe_status(status: MaintenanceStatus, now: float) -> list[str]:
    """Readable lines for a status."""
    if not status.is_active:
        return ["Maintenance: OFF", f"In-flight jobs: {status.active_jobs_count}"]
    assert status.mode is not None
    lines = [
        f"Maintenance: ON ({status.mode.value} mode)",
        f"Reason:      {status.reason}",
        f"Started:     {iso_utc(status.started_at)} by {status.enabled_by or 'unknown'}",
    ]
    end = status.estimated_completion
    if end is None:
        lines.append("Expected end: not announced (stays on until disabled)")
    elif status.overrunning(now):
        lines.append(f"Expected end: {iso_utc(end)} (OVERRUNNING by {format_duration(now - end)})")
    else:
        lines.append(
            f"Expected end: {iso_utc(end)} (in {format_duration(end - now)}"
            + (", ends by itself)" if status.auto_end else ")")
        )
    blocked = ", ".join(status.blocked_operations) or "nothing (test mode records only)"
    lines.append(f"Blocked:     {blocked}")
    lines.append(f"In-flight jobs: {status.active_jobs_count}")
    return lines


def describe_updates(status: MaintenanceStatus) -> list[str]:
    """The progress updates of the maintenance under way, oldest first."""
    if not status.is_active or not status.updates:
        return []
    return ["Updates:"] + [f"  {iso_utc(u.at)} {u.text} (by {u.by})" for u in status.updates]


def describe_counts(counts: dict[str, Any]) -> list[str]:
    """Readable lines for the refused (and, in test mode, would-be refused) attempts."""
    titles = {
        "blocked": "Refused attempts",
        "would_block_normal": "Test mode, normal would refuse",
        "would_block_emergency": "Test mode, emergency would refuse",
    }
    lines: list[str] = []
    for kind, title in titles.items():
        per_op = counts.get(kind) or {}
        if not per_op:
            continue
        lines.append(f"{title}:")
        for operation, surfaces in sorted(per_op.items()):
            detail = ", ".join(f"{s}={n}" for s, n in sorted(surfaces.items()))
            lines.append(f"  {operation:<24} {sum(surfaces.values()):>7}  ({detail})")
    return lines


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status JSON (contract shape).")
@click.pass_context
@cli_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the maintenance state."""
    guard = get_guard(ctx)
    current = guard.status()
    now = time.time()
    counts = guard.attempt_counts()
    if as_json:
        data = current.to_dict(now, include_admin=True)
        data["attempt_counts"] = counts  # admin view: {kind: {operation: {surface: n}}}
        click.echo(json.dumps(data, indent=2))
    else:
        lines = describe_status(current, now) + describe_updates(current)
        lines += describe_pauses(current.pauses(now), now) + describe_windows(current.windows, now)
        click.echo("\n".join(lines + describe_counts(counts)))


@click.command()
@click.option(
    "--mode",
    type=click.Choice([m.value for m in MaintenanceMode], case_sensitive=False),
    default="normal",
    show_default=True,
)
@click.option("--reason", required=True, help="Why (shown to users; at most 500 characters).")
@click.option("--duration", type=DURATION, default=None, help="Expected duration: 90s, 30m, 1h30m.")
@click.option("--auto-end", is_flag=True, help="End maintenance by itself when the duration ends.")
@click.option(
    "--operation",
    "operations",
    multiple=True,
    help="Block only this operation in normal mode (repeatable); default: all high-risk ones.",
)
@click.option("--by", default=default_actor, help="Who is switching (default: your login name).")
@click.pass_context
@cli_errors
def enable(
    ctx: click.Context,
    mode: str,
    reason: str,
    duration: int | None,
    auto_end: bool,
    operations: tuple[str, ...],
    by: str | None,
) -> None:
    """Switch maintenance on for every process of the fleet."""
    guard = get_guard(ctx)
    new = guard.enable(
        mode,
        reason=reason,
        duration=duration,
        by=by,
        auto_end=auto_end,
        operations=list(operations) or None,
    )
    click.echo("\n".join(describe_status(guard.status(), time.time())))
    if new.mode is MaintenanceMode.EMERGENCY:
        click.echo("Note: use `maintenance-guard emergency` to also revoke running jobs.")


@click.command()
@click.option("--by", default=default_actor, help="Who is switching (default: your login name).")
@click.option("--reason", default="", help="Optional note for the audit log.")
@click.pass_context
@cli_errors
def disable(ctx: click.Context, by: str | None, reason: str) -> None:
    """Switch maintenance off (after an emergency, then check the fleet resumed)."""
    guard = get_guard(ctx)
    watch_deactivation(guard)
    was_active = guard.current().is_active
    guard.disable(by=by, reason=reason)
    click.echo("Maintenance: OFF" if was_active else "Maintenance was not active; nothing changed.")


@click.command()
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--since", type=DURATION, default=None, help="Only events newer than this (1h).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@cli_errors
def events(ctx: click.Context, limit: int, since: int | None, as_json: bool) -> None:
    """Show the audit log, newest first."""
    guard = get_guard(ctx)
    after = None if since is None else time.time() - since
    rows = guard.events(limit=limit, since=after)
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in rows], indent=2))
        return
    if not rows:
        click.echo("No events.")
        return
    for event in rows:
        stamp = datetime.fromtimestamp(event.at).strftime("%Y-%m-%d %H:%M:%S")
        detail = " ".join(
            f"{k}={v}" for k, v in event.fields.items() if v and k not in ("version",)
        )
        reason = f' "{event.reason}"' if event.reason else ""
        click.echo(f"{stamp}  {event.type:<15} by {event.actor}{reason}  {detail}".rstrip())
