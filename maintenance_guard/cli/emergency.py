"""The emergency commands: `emergency` (refuse all, pause, grace, revoke) and `recover`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..emergency import MAX_KILL_AFTER, EmergencyReport, run_emergency
from ..emergency import recover as recover_jobs
from ..errors import InvalidInput
from ..inputs import MAX_GRACE_SECONDS
from ..sessions import DEFAULT_SESSION_PREFIX, SessionInvalidator, admin_predicate
from ..urls import mask_url, redact
from .celery_app import APP_HELP, load_celery_app
from .errors import EXIT_STORE, cli_errors, one_line
from .group import default_actor, get_guard


def _session_invalidator(
    guard: Any, url: str | None, prefix: str, predicate: Any
) -> SessionInvalidator:
    """The invalidator of the sessions at ``url``, else in the guard's own Redis."""
    if not url:
        return SessionInvalidator(guard.store.redis, prefix, predicate)
    try:
        return SessionInvalidator.from_url(url, prefix, is_admin=predicate)
    except InvalidInput as exc:
        raise InvalidInput(redact(str(exc), url)) from None


def _sessions_not_invalidated(
    report: EmergencyReport, sessions: SessionInvalidator | bool, url: str | None
) -> str:
    """Why the sessions asked for were not invalidated ("" when they were, or not asked)."""
    if not sessions or report.sessions is not None:
        return ""
    where = f"the session Redis at {mask_url(url)}" if url else "the guard's Redis"
    return redact(
        f"non-admin sessions were NOT invalidated: {where} did not answer "
        "(the rest of the emergency went ahead)",
        url,
    )


def _print_report(report: EmergencyReport) -> None:
    click.echo(f"Emergency {report.id}: EMERGENCY mode on ({report.reason!r} by {report.by})")
    if report.sessions:
        click.echo(
            f"Sessions: {report.sessions['invalidated']} non-admin invalidated, "
            f"{report.sessions['kept_admin']} admin kept"
        )
    for worker, queues in report.consumers_cancelled.items():
        click.echo(f"Paused {worker}: {', '.join(queues) or '(no queue)'}")
    for item in report.unreachable:
        click.echo(f"Not reached {item['worker']}: {item['why']}")
    if report.called_off is not None:
        click.echo(
            "Called off before the end of the grace period "
            f"(maintenance now {report.called_off.get('mode') or 'off'}): nothing terminated"
        )
    click.echo(f"Finished in grace: {len(report.finished_in_grace)}")
    for job in report.finished_in_grace:
        click.echo(f"  {job['id']}  {job['name']}")
    if report.held_back:
        click.echo(f"Held back before starting (run after maintenance): {len(report.held_back)}")
        for job in report.held_back:
            click.echo(f"  {job['id']}  {job['name']}")
    click.echo(f"Terminated: {len(report.terminated)}")
    for t in report.terminated:
        note = "recoverable" if t.recoverable else "needs a decision"
        click.echo(f"  {t.id}  {t.name} on {t.worker} ({t.signal}; {note})")
    click.echo(f"Could not be stopped: {len(report.not_stopped)}")
    for item in report.not_stopped:
        why = f" ({item['why']})" if item.get("why") else ""
        click.echo(f"  {item['id']}  {item['name']} on {item['worker']} pid {item['pid']}{why}")
    if report.seconds_to_gone is not None:
        click.echo(f"Last job gone {report.seconds_to_gone:.3f}s after the grace period")
    for warning in report.warnings:
        click.echo(f"Warning: {warning}", err=True)


@click.command()
@click.option("--reason", required=True, help="Why (shown to users; at most 500 characters).")
@click.option(
    "--grace",
    type=click.IntRange(0, MAX_GRACE_SECONDS),
    default=30,
    show_default=True,
    help="Seconds running jobs get to finish.",
)
@click.option(
    "--kill-after",
    type=click.IntRange(0, MAX_KILL_AFTER),
    default=10,
    show_default=True,
    help="Seconds after SIGTERM before SIGKILL.",
)
@click.option("--by", default=default_actor, help="Who is switching (default: your login name).")
@click.option("--app", "app_spec", envvar="MAINTENANCE_GUARD_CELERY_APP", help=APP_HELP)
@click.option("--no-sessions", is_flag=True, help="Do not invalidate sessions.")
@click.option(
    "--session-redis-url",
    envvar="MAINTENANCE_GUARD_SESSION_REDIS_URL",
    default=None,
    help="Redis holding the Flask-Session sessions (default: the guard's Redis).",
)
@click.option(
    "--session-prefix",
    envvar="MAINTENANCE_GUARD_SESSION_PREFIX",
    default=DEFAULT_SESSION_PREFIX,
    show_default=True,
    help="Flask-Session key prefix (SESSION_KEY_PREFIX).",
)
@click.option("--admin-key", default="is_admin", show_default=True, help="Session flag of admins.")
@click.option(
    "--admin-user-id", "admin_ids", multiple=True, help="An admin's _user_id (repeatable)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
@cli_errors
def emergency(
    ctx: click.Context,
    reason: str,
    grace: int,
    kill_after: int,
    by: str,
    app_spec: str | None,
    no_sessions: bool,
    session_redis_url: str | None,
    session_prefix: str,
    admin_key: str,
    admin_ids: tuple[str, ...],
    as_json: bool,
) -> None:
    """Emergency: refuse everything, pause workers, grace period, then revoke running jobs."""
    guard = get_guard(ctx)
    app = load_celery_app(app_spec)
    sessions: SessionInvalidator | bool = False
    if not no_sessions:
        predicate = admin_predicate(admin_key or None, admin_user_ids=admin_ids)
        sessions = _session_invalidator(guard, session_redis_url, session_prefix, predicate)

    if as_json or not sys.stderr.isatty():
        report = run_emergency(
            guard, reason, grace, kill_after, by, celery_app=app, sessions=sessions
        )
    else:
        # Deferred: rich is a heavy import that only the interactive progress bar needs.
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[left]} job(s) left"),
            TimeRemainingColumn(),
            console=None,
            transient=True,
        ) as bar:
            task = bar.add_task("grace period", total=max(grace, 1), left=0)

            def progress(phase: str, elapsed: float, total: float, left: int) -> None:
                bar.update(
                    task, description=phase, completed=elapsed, total=max(total, 1), left=left
                )

            report = run_emergency(
                guard,
                reason,
                grace,
                kill_after,
                by,
                celery_app=app,
                sessions=sessions,
                progress=progress,
            )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        _print_report(report)
    sessions_missed = _sessions_not_invalidated(report, sessions, session_redis_url)
    if sessions_missed:
        click.echo(f"Error: {one_line(sessions_missed)}", err=True)
    if report.not_stopped:
        sys.exit(1)
    if sessions_missed:
        sys.exit(EXIT_STORE)


@click.command()
@click.option("--app", "app_spec", envvar="MAINTENANCE_GUARD_CELERY_APP", help=APP_HELP)
@click.option("--by", default=default_actor, help="Who recovers (default: your login name).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@cli_errors
def recover(ctx: click.Context, app_spec: str | None, by: str, as_json: bool) -> None:
    """After an emergency: re-enqueue terminated recoverable jobs once; list the rest."""
    guard = get_guard(ctx)
    app = load_celery_app(app_spec)
    result = recover_jobs(guard, app, by)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        click.echo(f"Re-enqueued: {len(result.recovered)}")
        for r in result.recovered:
            click.echo(f"  {r['id']} -> {r['new_id']}  {r['name']}")
        if result.already_recovered:
            click.echo(f"Already recovered earlier: {len(result.already_recovered)}")
        click.echo(f"Not recoverable (decide by hand): {len(result.not_recoverable)}")
        for j in result.not_recoverable:
            click.echo(
                f"  {j['id']}  {j['name']} [{j.get('operation') or '-'}] "
                f"args={json.dumps(j['args'])} kwargs={json.dumps(j['kwargs'])}"
            )
    for failure in result.failed:
        click.echo(f"Error: could not re-enqueue {failure['id']}: {failure['error']}", err=True)
    if result.failed:
        sys.exit(1)
