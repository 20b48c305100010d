"""Every task name a canvas would publish, now or later: its tasks, the links and
error links, the rest of a chain, a chord's body."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from celery import canvas as _canvas


def signature_names(sig: Any) -> Iterator[str]:
    """Every task name a canvas would publish, now or later (links, chain, chord body)."""
    if sig is None:
        return
    if isinstance(sig, dict) and not isinstance(sig, _canvas.Signature):
        sig = _canvas.signature(sig)
    if isinstance(sig, (list, tuple)):
        for item in sig:
            yield from signature_names(item)
        return
    if isinstance(sig, _canvas._chord):
        yield from signature_names(list(sig.tasks))
        yield from signature_names(sig.body)
    elif isinstance(sig, (_canvas._chain, _canvas.group)):
        yield from signature_names(list(sig.tasks))
    elif isinstance(sig, (_canvas.xmap, _canvas.xstarmap, _canvas.chunks)):
        yield from signature_names(sig.kwargs.get("task"))
    else:
        yield str(sig.task)
    options = sig.options if isinstance(sig, _canvas.Signature) else {}
    for key in ("link", "link_error", "chain"):
        yield from signature_names(options.get(key))
    chord = options.get("chord")
    if chord:
        yield from signature_names(chord)


def option_names(options: dict[str, Any]) -> Iterator[str]:
    for key in ("link", "link_error", "chain", "chord"):
        yield from signature_names(options.get(key))
