"""One task per operation type, doing realistic simulated work (a short wait plus CPU).

Caption generation and image processing use `GuardedTask` (declared operation); the
others are plain tasks classified by the ``maintenance_guard_task_operations`` patterns
of ``celeryconfig.py``. ``duration`` scales the simulated work (seconds).
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import Any

from maintenance_guard.celery import GuardedTask

from . import app


def _work(duration: float, seed: str) -> str:
    """Sleep for most of ``duration`` and hash for the rest; returns a digest."""
    duration = max(0.0, min(float(duration), 600.0))
    time.sleep(duration * 0.8)
    digest = hashlib.sha256(seed.encode()).digest()
    end = time.monotonic() + duration * 0.2
    while time.monotonic() < end:
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]


@app.task(base=GuardedTask, operation="caption_generation", bind=True, max_retries=3)
def generate_caption(self: Any, post_id: int, duration: float = 0.5) -> dict[str, Any]:
    """Generate a caption for a post."""
    words = ["sunset", "harbour", "friends", "coffee", "mountain", "city", "night"]
    rng = random.Random(post_id)
    caption = " ".join(rng.sample(words, 3))
    return {"post_id": post_id, "caption": caption, "digest": _work(duration, str(post_id))}


@app.task(base=GuardedTask, operation="image_processing")
def process_image(
    image_id: int, width: int = 1024, height: int = 768, duration: float = 0.8
) -> dict[str, Any]:
    """Resize an image and compute its thumbnail."""
    return {
        "image_id": image_id,
        "thumbnail": [max(1, width // 8), max(1, height // 8)],
        "digest": _work(duration, f"img-{image_id}"),
    }


@app.task
def create_job(spec: dict[str, Any], duration: float = 0.3) -> dict[str, Any]:
    """Create a processing job from a spec."""
    return {"job": spec.get("name", "job"), "digest": _work(duration, repr(sorted(spec.items())))}


@app.task
def sync_platform(platform: str, duration: float = 0.6) -> dict[str, Any]:
    """Synchronise with an external platform."""
    return {"platform": platform, "digest": _work(duration, platform)}


@app.task
def run_batch(item_ids: list[int], duration_per_item: float = 0.1) -> dict[str, Any]:
    """Process a batch of items one after the other."""
    digests = [_work(duration_per_item, f"item-{i}") for i in item_ids]
    return {
        "items": len(item_ids),
        "digest": hashlib.sha256("".join(digests).encode()).hexdigest()[:16],
    }


@app.task
def update_user_profile(
    user_id: int, changes: dict[str, Any], duration: float = 0.2
) -> dict[str, Any]:
    """Apply profile changes for a user."""
    return {"user_id": user_id, "changed": sorted(changes), "digest": _work(duration, str(user_id))}


@app.task
def fetch_report(report_id: int, duration: float = 0.2) -> dict[str, Any]:
    """Read a report (a read: never blocked in normal mode)."""
    return {"report_id": report_id, "digest": _work(duration, f"report-{report_id}")}
