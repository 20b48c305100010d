"""A second guard process for test-mode tests: makes the checks it is told to, reports.

Run as ``python -m tests.integration.testmode_support '<json list of attempts>'`` with
``MAINTENANCE_GUARD_REDIS_URL``/``MAINTENANCE_GUARD_KEY_PREFIX`` set. Each attempt is
``[operation, surface, target, user, is_admin]``. It prints one JSON line
``{"refused": n, "made": n}`` once every check is made and flushed, then keeps its
watcher (and so its presence record) alive until stdin closes or says "quit".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from maintenance_guard import MaintenanceActive, MaintenanceGuard


def main(argv: Sequence[str]) -> int:
    attempts: list[list[Any]] = json.loads(argv[0])
    guard = MaintenanceGuard.from_url(
        os.environ["MAINTENANCE_GUARD_REDIS_URL"],
        key_prefix=os.environ["MAINTENANCE_GUARD_KEY_PREFIX"],
        poll_interval=0.2,
    )
    guard.role = "worker"
    guard.start()
    refused = 0
    for operation, surface, target, user, is_admin in attempts:
        try:
            guard.check(operation, surface=surface, target=target, user=user, is_admin=is_admin)
        except MaintenanceActive:
            refused += 1
    guard.flush()
    print(json.dumps({"refused": refused, "made": len(attempts)}), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
    guard.stop()
    return 0


@contextmanager
def second_process(
    env: dict[str, str], attempts: list[list[Any]]
) -> Iterator[tuple[subprocess.Popen[str], dict[str, int]]]:
    """Start the helper, wait for its result line; always stops it afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.testmode_support", json.dumps(attempts)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"helper process exited early (code {proc.wait(10)})")
        yield proc, json.loads(line)
    finally:
        try:
            if proc.stdin is not None:
                proc.stdin.write("quit\n")
                proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
