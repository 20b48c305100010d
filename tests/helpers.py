"""Small test helpers: bounded polling and free ports."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def wait_for(
    condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02
) -> object:
    """Poll ``condition`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
