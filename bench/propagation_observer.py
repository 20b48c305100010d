"""One observing process for the propagation benchmark.

Usage: python -m bench.propagation_observer URL PREFIX [--deaf]
Prints ``ready <version>``, then ``seen <version> <epoch seconds>`` the moment its guard
installs each new state (from the watcher thread). ``--deaf`` drops every pub/sub
notification, so only the version poll (default interval) can bring changes. Without
it, a plain redis-py subscriber on channel ``PREFIX:bare`` (the baseline) prints
``bare <n> <epoch seconds>`` the moment each message ``n`` arrives.
Exits when stdin closes.
"""

from __future__ import annotations

import sys
import threading
import time

import redis

from maintenance_guard import MaintenanceGuard, MaintenanceStatus
from maintenance_guard.settings import GuardSettings
from maintenance_guard.store import RedisStore, connect


class _LostNotifications:
    """A subscription that never delivers anything: every notification is lost."""

    def wait(self, timeout: float) -> None:
        time.sleep(timeout)
        return None

    def close(self) -> None:
        return None


class DeafStore(RedisStore):
    """A real Redis store whose pub/sub is deaf; reads and the version poll still work."""

    def subscribe(self) -> _LostNotifications:
        return _LostNotifications()


_out = threading.Lock()


def say(line: str) -> None:
    """One whole line on stdout (two threads write)."""
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def listen_bare(url: str, channel: str) -> None:
    """The baseline: a plain pub/sub subscriber, stamping each message on arrival."""
    pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    pubsub.get_message(timeout=5)  # the subscription is in place before "ready"

    def run() -> None:
        for message in pubsub.listen():  # type: ignore[no-untyped-call]
            say(f"bare {int(message['data'])} {time.time():.6f}")

    threading.Thread(target=run, daemon=True).start()


def main() -> None:
    url, prefix = sys.argv[1], sys.argv[2]
    if "--deaf" in sys.argv:
        guard = MaintenanceGuard(DeafStore(connect(url), prefix), GuardSettings(key_prefix=prefix))
    else:
        guard = MaintenanceGuard.from_url(url, key_prefix=prefix)
        listen_bare(url, f"{prefix}:bare")

    def seen(status: MaintenanceStatus) -> None:
        say(f"seen {status.version} {time.time():.6f}")

    guard.add_listener(seen)
    say(f"ready {guard.current().version}")
    sys.stdin.read()  # until the benchmark closes our stdin
    guard.stop(timeout=2)


if __name__ == "__main__":
    main()
