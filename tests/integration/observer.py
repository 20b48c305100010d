"""A second process for propagation tests: prints each state version it sees.

Usage: python -m tests.integration.observer URL PREFIX [poll_interval] [--no-pubsub]
Prints ``ready <version>`` once, then ``seen <version> <mode> <blocked>`` per change.
"""

from __future__ import annotations

import sys
import time

from maintenance_guard import MaintenanceGuard, StoreUnavailable
from maintenance_guard.store import RedisStore


class _NoSubscription:
    """A subscription that never delivers: simulates every notification being lost."""

    def wait(self, timeout: float) -> int | None:
        time.sleep(timeout)
        return None

    def close(self) -> None:
        return None


class DeafStore(RedisStore):
    """A store whose change notifications never arrive (only the version poll works)."""

    def subscribe(self) -> _NoSubscription:  # type: ignore[override]
        return _NoSubscription()


def main() -> None:
    url, prefix = sys.argv[1], sys.argv[2]
    poll = float(sys.argv[3]) if len(sys.argv) > 3 and not sys.argv[3].startswith("--") else 1.0
    if "--no-pubsub" in sys.argv:
        from maintenance_guard.settings import GuardSettings
        from maintenance_guard.store import connect

        guard = MaintenanceGuard(
            DeafStore(connect(url), prefix), GuardSettings(key_prefix=prefix, poll_interval=poll)
        )
    else:
        guard = MaintenanceGuard.from_url(url, key_prefix=prefix, poll_interval=poll)
    guard.start()
    last = guard.current().version
    print(f"ready {last}", flush=True)
    while True:
        status = guard.current()
        if status.version != last:
            last = status.version
            blocked = guard.is_blocked("caption_generation")
            print(f"seen {last} {status.mode} {blocked}", flush=True)
        time.sleep(0.001)


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, StoreUnavailable):
        pass
