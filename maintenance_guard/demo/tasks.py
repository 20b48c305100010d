"""One demo task per operation type, doing simulated work (a short wait plus hashing).

Plain functions, registered on a Celery app by `define_tasks`.
"""

from __future__ import annotations

import hashlib
import random
import time
from types import SimpleNamespace
from typing import Any

from celery import Celery

from ..celery import GuardedTask


def _work(duration: float, seed: str) -> str:
    """Sleep for most of ``duration`` and hash for the rest; returns a digest."""
    duration = max(0.0, min(float(duration), 600.0))
    time.sleep(duration * 0.8)
    digest = hashlib.sha256(seed.encode()).digest()
    end = time.monotonic() + duration * 0.2
    while time.monotonic() < end:
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]


def generate_caption(post_id: int, duration: float = 0.5) -> dict[str, Any]:
    """Generate a caption for a post."""
    words = ["sunset", "harbour", "friends", "coffee", "mountain", "city", "night"]
    caption = " ".join(random.Random(post_id).sample(words, 3))
    return {"post_id": post_id, "caption": caption, "digest": _work(duration, str(post_id))}


def process_image(image_id: int, duration: float = 0.8) -> dict[str, Any]:
    """Resize an image."""
    return {"image_id": image_id, "digest": _work(duration, f"img-{image_id}")}


def create_job(spec: dict[str, Any], duration: float = 0.3) -> dict[str, Any]:
    """Create a processing job from a spec."""
    return {"job": spec.get("name", "job"), "digest": _work(duration, repr(sorted(spec)))}


def sync_platform(platform: str, duration: float = 0.6) -> dict[str, Any]:
    """Synchronise with an external platform."""
    return {"platform": platform, "digest": _work(duration, platform)}


def run_batch(item_ids: list[int], duration_per_item: float = 0.1) -> dict[str, Any]:
    """Process a batch of items one after the other."""
    digests = [_work(duration_per_item, f"item-{i}") for i in item_ids]
    return {"items": len(item_ids), "digest": _work(0, "".join(digests))}


def update_user_profile(
    user_id: int, changes: dict[str, Any], duration: float = 0.2
) -> dict[str, Any]:
    """Apply profile changes for a user."""
    return {"user_id": user_id, "changed": sorted(changes), "digest": _work(duration, "u")}


def fetch_report(report_id: int, duration: float = 0.2) -> dict[str, Any]:
    """Read a report (a read: never blocked in normal mode)."""
    return {"report_id": report_id, "digest": _work(duration, f"report-{report_id}")}


# Declared operations; the others are classified by name (config.TASK_OPERATIONS).
_GUARDED = {"generate_caption": "caption_generation", "process_image": "image_processing"}
_FUNCTIONS = (
    generate_caption,
    process_image,
    create_job,
    sync_platform,
    run_batch,
    update_user_profile,
    fetch_report,
)


def define_tasks(app: Celery) -> SimpleNamespace:
    """Register the demo tasks (named ``demo.<function>``) on ``app``; returns them by name."""
    registered: dict[str, Any] = {}
    for function in _FUNCTIONS:
        name = function.__name__
        options: dict[str, Any] = {"name": f"demo.{name}"}
        if name in _GUARDED:
            options.update(base=GuardedTask, operation=_GUARDED[name])
        registered[name] = app.task(**options)(function)
    return SimpleNamespace(**registered)
