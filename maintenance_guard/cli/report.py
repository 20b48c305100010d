"""`maintenance-guard report` (test-mode validation report) and `reset-test`."""

from __future__ import annotations

import json
from dataclasses import replace

import click

from ..emergency import build_report
from ..errors import InvalidInput, StoreUnavailable
from ..guard import MaintenanceGuard
from ..impact import WindowImpact
from ..inputs import MAX_GRACE_SECONDS
from ..sessions import session_counter
from ..store import RedisStore
from ..validation import build_test_report, reset_test_data
from .errors import cli_errors
from .group import default_actor, get_guard


@click.command()
@click.option(
    "--mode-test",
    "mode_test",
    is_flag=True,
    help="Report on the latest test-mode window (otherwise: the emergency report).",
)
@click.option(
    "--grace",
    type=click.IntRange(0, MAX_GRACE_SECONDS),
    default=30,
    show_default=True,
    help="Grace period (seconds) to judge in-flight jobs against.",
)
@click.option(
    "--status-url",
    envvar="MAINTENANCE_GUARD_STATUS_URL",
    default=None,
    help="Status API to check, e.g. http://web/api/maintenance/status.",
)
@click.option(
    "--session-prefix",
    default="session:",
    show_default=True,
    help="Redis key prefix of the Flask-Session sessions to count.",
)
@click.option(
    "--latency-calls",
    type=click.IntRange(0, 1_000_000),
    default=5000,
    show_default=True,
    help="check() calls to time in this process (0 skips the measure).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
@cli_errors
def report(
    ctx: click.Context,
    mode_test: bool,
    grace: int,
    status_url: str | None,
    session_prefix: str,
    latency_calls: int,
    as_json: bool,
) -> None:
    """Show a report: the last emergency and the user impact of the last maintenance
    window (refusals, users, jobs finished); --mode-test for the latest test-mode window."""
    guard = get_guard(ctx)
    if not mode_test:
        _emergency_report(guard, as_json, session_prefix)
        return
    built = build_test_report(
        guard,
        grace=grace,
        status_url=status_url,
        session_prefix=session_prefix,
        latency_calls=latency_calls,
    )
    if as_json:
        click.echo(json.dumps(built.to_dict(), indent=2))
    else:
        click.echo(built.to_text())


def _emergency_report(guard: MaintenanceGuard, as_json: bool, session_prefix: str) -> None:
    overview = build_report(guard)
    impact = _last_window(guard, session_prefix)
    if as_json:
        body = {**overview.to_dict(), "impact": None if impact is None else impact.to_dict()}
        click.echo(json.dumps(body, indent=2, default=str))
    else:
        click.echo(overview.to_text())
        click.echo("")
        click.echo("No maintenance window recorded." if impact is None else impact.to_text())


def _last_window(guard: MaintenanceGuard, session_prefix: str) -> WindowImpact | None:
    """The impact of the window under way, else of the last one; while it is open, with
    the sessions found under ``session_prefix`` on the guard's Redis (none found: unknown,
    Flask-Session may keep them elsewhere)."""
    impact = guard.impact()
    if impact is None or not impact.active or not isinstance(guard.store, RedisStore):
        return impact
    try:
        sessions = session_counter(guard.store.redis, session_prefix).count_by_role()
    except (InvalidInput, StoreUnavailable):
        return impact
    if not (sessions.admin or sessions.non_admin):
        return impact
    return replace(impact, sessions=sessions)


@click.command("reset-test")
@click.option("--by", default=default_actor, help="Who resets (default: your login name).")
@click.pass_context
@cli_errors
def reset_test(ctx: click.Context, by: str) -> None:
    """Delete the test-mode records and would-be-blocked counters (audited)."""
    guard = get_guard(ctx)
    deleted = reset_test_data(guard, by)
    click.echo(f"Test data cleared ({deleted} recorded attempts deleted).")
