"""The `maintenance-guard` command line (click).

Input errors print one line and exit 2; an unreachable Redis prints one line and exits 3.
"""

from __future__ import annotations

import functools
import getpass
import json
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import click

from .errors import InvalidInput, MaintenanceGuardError, StoreUnavailable
from .guard import MaintenanceGuard
from .inputs import format_duration, parse_duration
from .modes import MaintenanceMode
from .status import MaintenanceStatus, iso_utc
from .urls import mask_url, redact

F = TypeVar("F", bound=Callable[..., Any])

EXIT_INPUT = 2
EXIT_STORE = 3


class DurationType(click.ParamType):  # type: ignore[type-arg]
    """Durations like ``90``, ``90s``, ``30m``, ``1h30m``."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(value)
        except InvalidInput as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationType()


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# redis-py's Sentinel errors quote whole client reprs (hundreds of characters).
_REDIS_REPR = re.compile(r"<redis\.client\.Redis\(.*?(?:\)>)+(?= |$)")


def one_line(text: str) -> str:
    """``text`` as one printable line: control characters, line breaks and undecodable
    bytes (surrogate escapes) written as escapes, so an error never spans lines."""
    text = _REDIS_REPR.sub("<redis client>", text)
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def fail(message: str, code: int) -> NoReturn:
    """Print ``Error: message`` as one line on stderr (URL secrets masked) and exit."""
    ctx = click.get_current_context(silent=True)
    url = ctx.find_root().obj.get("url") if ctx is not None and ctx.find_root().obj else None
    click.echo(f"Error: {one_line(redact(message, url))}", err=True)
    sys.exit(code)


def cli_errors(func: F) -> F:
    """Turn the package's errors into one line on stderr and a clear exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InvalidInput as exc:
            fail(str(exc), EXIT_INPUT)
        except StoreUnavailable as exc:
            url = click.get_current_context().find_root().obj.get("url")
            where = mask_url(url) if url else "the embedded server"
            fail(f"cannot reach Redis at {where}: {exc}", EXIT_STORE)
        except MaintenanceGuardError as exc:
            fail(str(exc), 1)

    return wrapper  # type: ignore[return-value]


def get_guard(ctx: click.Context) -> MaintenanceGuard:
    """The guard for this invocation, made on first use (so --help needs no Redis)."""
    obj = ctx.find_root().obj
    if obj.get("guard") is None:
        guard = MaintenanceGuard.from_url(obj.get("url"), key_prefix=obj["prefix"])
        guard.refresh(raise_errors=True)
        obj["guard"] = guard
    return obj["guard"]  # type: ignore[no-any-return]


class OneLineErrorGroup(click.Group):
    """A group whose usage errors are one line on stderr and exit code 2, no usage dump."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.UsageError as exc:
            click.echo(f"Error: {one_line(exc.format_message())}", err=True)
            sys.exit(EXIT_INPUT)
        except click.ClickException as exc:
            click.echo(f"Error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


def default_actor() -> str:
    """The operator's login name, for the audit log."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@click.group(cls=OneLineErrorGroup)
@click.option(
    "--redis-url",
    envvar="MAINTENANCE_GUARD_REDIS_URL",
    default=None,
    help="Redis URL (env MAINTENANCE_GUARD_REDIS_URL); default: the embedded server.",
)
@click.option(
    "--prefix",
    envvar="MAINTENANCE_GUARD_KEY_PREFIX",
    default="maintenance_guard",
    show_default=True,
    help="Key prefix of the state in Redis.",
)
@click.version_option(package_name="maintenance-guard")
@click.pass_context
def main(ctx: click.Context, redis_url: str | None, prefix: str) -> None:
    """Switch Celery workers and Flask apps into maintenance mode, fleet-wide."""
    ctx.ensure_object(dict)
    ctx.obj.update(url=redis_url, prefix=prefix, guard=None)


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


@main.command()
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
        click.echo("\n".join(describe_status(current, now) + describe_counts(counts)))


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


@main.command()
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


@main.command()
@click.option("--by", default=default_actor, help="Who is switching (default: your login name).")
@click.option("--reason", default="", help="Optional note for the audit log.")
@click.pass_context
@cli_errors
def disable(ctx: click.Context, by: str | None, reason: str) -> None:
    """Switch maintenance off."""
    guard = get_guard(ctx)
    was_active = guard.current().is_active
    guard.disable(by=by, reason=reason)
    click.echo("Maintenance: OFF" if was_active else "Maintenance was not active; nothing changed.")


@main.command()
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


def _register_command_modules() -> None:
    # Each module under commands/ adds its commands to `main` when imported.
    import importlib
    import pkgutil

    from . import commands

    for module in pkgutil.iter_modules(commands.__path__):
        importlib.import_module(f"{commands.__name__}.{module.name}")


_register_command_modules()


if __name__ == "__main__":  # pragma: no cover
    # Under `python -m`, this file runs as __main__ while commands/ modules import
    # maintenance_guard.cli: run that module's group, which holds their commands.
    from maintenance_guard.cli import main as registered_main

    registered_main()
