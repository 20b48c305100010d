"""Canvases are refused whole: every task a chain, group, chord, chunks or map would
publish, now or later (links, chain, chord body), is checked before its first message.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable
from typing import Any

from celery import canvas as _canvas

from .context import flag, local
from .installation import Installation, installation_of
from .names import option_names, signature_names
from .publish import is_running_work, refuse_names

logger = logging.getLogger("maintenance_guard")


def refuse_canvas(inst: Installation, sig: Any, options: dict[str, Any]) -> None:
    """Raise `MaintenanceActive` if any task of the canvas ``sig`` (with the call's
    ``options``: links, chain, chord) is refused now."""
    running = is_running_work(inst.app, "", options.get("task_id"), options.get("parent_id"))
    names = itertools.chain(signature_names(sig), option_names(options))
    refuse_names(inst, names, running_work=running)


def guard_canvas_method(cls: type, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def apply_async(self: Any, *args: Any, **options: Any) -> Any:
        if type(self) is _canvas.Signature:
            # One task: send_task checks it with its links (and honours on_maintenance).
            return original(self, *args, **options)
        inst = installation_of(self._app) or installation_of(safe_app(self))
        if inst is None or getattr(local, "checked", False) or getattr(local, "replaying", False):
            return original(self, *args, **options)
        refuse_canvas(inst, self, options)
        # chord(header)(body) passes the body inside the kwargs argument of apply_async.
        call_kwargs = args[1] if len(args) > 1 else options.get("kwargs")
        if isinstance(self, _canvas._chord) and isinstance(call_kwargs, dict):
            running = is_running_work(
                inst.app, "", options.get("task_id"), options.get("parent_id")
            )
            refuse_names(inst, signature_names(call_kwargs.get("body")), running_work=running)
        with flag("checked", True):
            return original(self, *args, **options)

    apply_async._mg_guarded = True  # type: ignore[attr-defined]
    return apply_async


def safe_app(sig: Any) -> Any:
    try:
        return sig.app
    except Exception:
        return None


def patch_canvas() -> None:
    for cls in (
        _canvas.Signature,
        _canvas._chain,
        _canvas.group,
        _canvas._chord,
        _canvas._basemap,
        _canvas.chunks,
    ):
        method = cls.__dict__.get("apply_async")
        if method is None or getattr(method, "_mg_guarded", False):
            continue
        cls.apply_async = guard_canvas_method(cls, method)
