"""One-line errors and exit codes of the command line.

Input errors print one line and exit 2; an unreachable Redis prints one line and exits 3.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from ..errors import InvalidInput, MaintenanceGuardError, StoreUnavailable
from ..urls import mask_url, redact

F = TypeVar("F", bound=Callable[..., Any])

EXIT_INPUT = 2
EXIT_STORE = 3


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
