"""The thread-local publish context (a canvas already checked, a replay under way),
the header names the guard stamps, and the JSON codec of stored calls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kombu.utils import json as _kombu_json

logger = logging.getLogger("maintenance_guard")


CONFIG_PREFIX = "maintenance_guard_"
HEADER_PUBLISHED_AT = "mg_published_at"
HEADER_GUARDED = "mg_guarded"
HEADER_RUNNING_WORK = "mg_running_work"
HEADER_REPLAYED = "mg_replayed"
HEADER_ADMIN = "mg_admin"  # an admin's submission: HMAC stamp (admin_signature.py)
DEFERRED_SWEEP_SECONDS = 5.0

local = threading.local()


def stamp_time(now: float) -> str:
    """``now`` (epoch seconds) as the ``mg_published_at`` stamp: seconds and six digits of
    microseconds, cut (not rounded) to the microsecond, the form in which Redis' clock
    writes the state's times. A worker compares the two as floats, which then orders them
    as the clocks were; cheaper than ``repr`` (publish hot path)."""
    micros = str(int(now * 1_000_000))
    return micros[:-6] + "." + micros[-6:]


# kombu's JSON round-trips datetimes, UUIDs and decimals (task options such as ``eta``).
kombu_dumps: Callable[[Any], str] = _kombu_json.dumps
kombu_loads: Callable[[str], Any] = _kombu_json.loads


@contextmanager
def flag(name: str, value: Any = True) -> Iterator[None]:
    old = getattr(local, name, None)
    setattr(local, name, value)
    try:
        yield
    finally:
        setattr(local, name, old)


def replaying() -> Any:
    return flag("replaying")
