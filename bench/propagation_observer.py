"""One observing process for the propagation benchmark.

Usage: python -m bench.propagation_observer URL PREFIX [--deaf]
Prints ``ready <version>``, then ``seen <version> <epoch seconds>`` the moment its guard
installs each new state (from the watcher thread). ``--deaf`` drops every pub/sub
notification, so only the version poll (default interval) can bring changes.
Exits when stdin closes.
"""

from __future__ import annotations

import sys
import time

from maintenance_guard import MaintenanceGuard, MaintenanceStatus
from maintenance_guard.settings import GuardSettings
from maintenance_guard.store import RedisStore, connect


class _LostNotifications:
    """A subscription that never delivers anything: every notification is lost."""

    def wait(self, timeout: float) -> int | None:
        time.sleep(timeout)
        return None

    def close(self) -> None:
        return None


class DeafStore(RedisStore):
    """A real Redis store whose pub/sub is deaf; reads and the version poll still work."""

    def subscribe(self) -> _LostNotifications:  # type: ignore[override]
        return _LostNotifications()


def main() -> None:
    url, prefix = sys.argv[1], sys.argv[2]
    if "--deaf" in sys.argv:
        guard = MaintenanceGuard(DeafStore(connect(url), prefix), GuardSettings(key_prefix=prefix))
    else:
        guard = MaintenanceGuard.from_url(url, key_prefix=prefix)

    def seen(status: MaintenanceStatus) -> None:
        print(f"seen {status.version} {time.time():.6f}", flush=True)

    guard.add_listener(seen)
    print(f"ready {guard.current().version}", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    guard.stop(timeout=2)


if __name__ == "__main__":
    main()
