"""The `maintenance-guard` group and what its commands share: the guard, durations, the actor.

The commands live one family per module and are added to `main` in `cli/__init__.py`.
"""

from __future__ import annotations

import getpass
from typing import Any

import click

from ..errors import InvalidInput
from ..guard import MaintenanceGuard
from ..inputs import parse_duration
from .errors import OneLineErrorGroup


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


def get_guard(ctx: click.Context) -> MaintenanceGuard:
    """The guard for this invocation, made on first use (so --help needs no Redis)."""
    obj = ctx.find_root().obj
    if obj.get("guard") is None:
        guard = MaintenanceGuard.from_url(obj.get("url"), key_prefix=obj["prefix"])
        guard.refresh(raise_errors=True)
        obj["guard"] = guard
    return obj["guard"]  # type: ignore[no-any-return]


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
