"""What one process costs Redis: connections, idle round trips, notifications that carry
the state, forked children that follow their parent, and a deaf subscription replaced.

The benchmark `bench/bench_fleet.py` measures the same at 1,000 and 5,000 instances.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import redis

from maintenance_guard import MaintenanceGuard
from maintenance_guard.feed import FeedFollower
from maintenance_guard.settings import GuardSettings
from maintenance_guard.status import MaintenanceStatus
from maintenance_guard.store import RedisStore, connect
from maintenance_guard.store.subscription import RedisSubscription
from tests.helpers import wait_for
from tests.integration import celery_support
from tests.integration.celery_support import Broker, StartWorker, make_app, new_queue, uninstall

redis_broker = celery_support.redis_broker
start_worker = celery_support.start_worker

MONITOR_LINE = re.compile(r'^\+?[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"')


def channel_of(prefix: str) -> str:
    return f"{{{prefix}}}:changes"


def subscribers(client: redis.Redis, prefix: str) -> int:
    return int(client.pubsub_numsub(channel_of(prefix))[0][1])


# ------------------------------------------------------------------ one process


def test_an_idle_guard_holds_two_connections_and_makes_one_round_trip_a_poll(
    private_redis: object,
) -> None:
    url = private_redis.url  # type: ignore[attr-defined]
    guard = MaintenanceGuard.from_url(url, key_prefix="mgtest-idle", poll_interval=0.2)
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        guard.start()
        time.sleep(1.0)  # settled: subscribed, first polls done
        monitor = _connection(client)
        monitor.send_command("MONITOR")
        monitor.read_response()
        sent: list[str] = []
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            if monitor.can_read(timeout=0.1):
                match = MONITOR_LINE.match(str(monitor.read_response()))
                if match and match.group(1) != "lua":
                    sent.append(match.group(2).lower())
        monitor.disconnect()
        clients = [c for c in client.client_list() if c["cmd"] not in ("client", "monitor")]
        assert len(clients) <= 2, clients
        # 3 s at a 0.2 s poll: about 15 polls, each one script call; no PINGs, no reads.
        assert set(sent) == {"evalsha"}, sent
        assert 10 <= len(sent) <= 17, len(sent)
    finally:
        guard.stop(timeout=2)
        client.close()


def _connection(client: redis.Redis) -> Any:
    """A connection of its own (redis-py before 6 wants a command name)."""
    try:
        return client.connection_pool.get_connection()
    except TypeError:
        return client.connection_pool.get_connection("MONITOR")


class CountingStore(RedisStore):
    """Counts full state reads."""

    loads = 0

    def load_state(self) -> MaintenanceStatus | None:
        CountingStore.loads += 1
        return super().load_state()


def test_a_change_notification_carries_the_state_so_nobody_re_reads_it(
    redis_url: str, key_prefix: str, make_guard: Callable[..., MaintenanceGuard]
) -> None:
    watcher = MaintenanceGuard(
        CountingStore(connect(redis_url), key_prefix),
        GuardSettings(key_prefix=key_prefix, poll_interval=5.0),
    )
    admin = make_guard()
    try:
        watcher.start()
        wait_for(lambda: watcher._watcher.subscription is not None, timeout=5)
        time.sleep(0.3)
        before = CountingStore.loads
        status = admin.enable("normal", reason="carried", by="test")
        wait_for(lambda: watcher.current().version == status.version, timeout=2)
        assert watcher.current().reason == "carried"
        assert CountingStore.loads == before  # installed from the notification itself
    finally:
        watcher.stop(timeout=2)


class EchoLosingStore(RedisStore):
    """A store whose polls ask for an echo on a channel the subscription never hears:
    as a half-open subscription connection would look."""

    subscriptions = 0

    def subscribe(self) -> RedisSubscription:
        EchoLosingStore.subscriptions += 1
        return super().subscribe()  # type: ignore[return-value]

    def poll(self, member, presence, echo="", reads=()):  # type: ignore[no-untyped-def]
        return super().poll(member, presence, echo + ":lost" if echo else "", reads)


def test_a_subscription_whose_echoes_stop_arriving_is_replaced(
    redis_url: str, key_prefix: str, make_guard: Callable[..., MaintenanceGuard]
) -> None:
    guard = MaintenanceGuard(
        EchoLosingStore(connect(redis_url), key_prefix),
        GuardSettings(key_prefix=key_prefix, poll_interval=0.2),
    )
    try:
        guard.start()
        # Two echoing polls (every 5th) without their echo, then a new subscription.
        wait_for(lambda: EchoLosingStore.subscriptions >= 3, timeout=10)
        status = make_guard().enable("normal", reason="still arrives", by="test")
        wait_for(lambda: guard.current().version == status.version, timeout=2)
    finally:
        guard.stop(timeout=2)


# ------------------------------------------------------------------ forked children


def _fork(child: Callable[[], object]) -> tuple[int, int]:
    """Run ``child()`` in a forked process; its JSON result comes back on the pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        code = 0
        try:
            result = child()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            result, code = {"error": repr(exc)}, 1
        os.write(write_end, json.dumps(result).encode() + b"\n")
        os._exit(code)
    os.close(write_end)
    return pid, read_end


def _result(pid: int, read_end: int, timeout: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    chunks = b""
    os.set_blocking(read_end, False)
    while not chunks.endswith(b"\n") and time.monotonic() < deadline:
        try:
            chunk = os.read(read_end, 65536)
        except BlockingIOError:
            time.sleep(0.02)
            continue
        if not chunk:
            break
        chunks += chunk
    os.close(read_end)
    if not chunks.endswith(b"\n"):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    result = json.loads(chunks or b"{}")
    assert "error" not in result, result
    return result


@pytest.fixture
def parent_and_admin(
    key_prefix: str, redis_client: redis.Redis, make_guard: Callable[..., MaintenanceGuard]
) -> tuple[MaintenanceGuard, MaintenanceGuard]:
    """A guard whose watcher is subscribed (the parent of the forks below), and another
    to make changes with."""
    parent = make_guard()
    parent.start()
    admin = make_guard()
    wait_for(lambda: subscribers(redis_client, key_prefix) == 1, timeout=5)
    return parent, admin


def test_a_forked_child_follows_its_parents_state_without_subscribing(
    parent_and_admin: tuple[MaintenanceGuard, MaintenanceGuard],
    key_prefix: str,
    redis_client: redis.Redis,
) -> None:
    parent, admin = parent_and_admin

    def child() -> dict[str, object]:
        assert isinstance(parent._watcher, FeedFollower)
        parent.start()
        wait_for(lambda: parent.current().mode is not None, timeout=10)
        seen_at = time.time()
        return {
            "mode": parent.current().mode.value,  # type: ignore[union-attr]
            "reason": parent.current().reason,
            "seen_at": seen_at,
            "subscribers": subscribers(redis_client, key_prefix),
        }

    pid, pipe = _fork(child)
    time.sleep(0.5)  # the child is following
    enabled_at = time.time()
    admin.enable("normal", reason="children follow", by="test")
    result = _result(pid, pipe)
    assert result["mode"] == "normal" and result["reason"] == "children follow"
    assert result["subscribers"] == 1  # the parent's only: the child added none
    assert float(result["seen_at"]) - enabled_at < 1.0  # a notification, not a poll away


def test_a_forked_child_catches_up_with_its_parent_at_once_when_asked(
    parent_and_admin: tuple[MaintenanceGuard, MaintenanceGuard],
) -> None:
    # A pool process calls catch_up before each task starts: it must not depend on its
    # follower thread's next read (here the child never starts that thread at all).
    parent, admin = parent_and_admin

    def child() -> dict[str, object]:
        time.sleep(0.5)  # the parent process has enabled, and its feed says so
        before = parent.current().mode
        parent.catch_up()
        after = parent.current()
        return {"before": before and before.value, "after": after.mode and after.mode.value}

    pid, pipe = _fork(child)
    admin.enable("normal", reason="catch up", by="test")
    wait_for(lambda: parent.current().mode is not None, timeout=5)
    result = _result(pid, pipe)
    assert result == {"before": None, "after": "normal"}


def test_a_child_whose_parent_stops_updating_watches_redis_itself(
    parent_and_admin: tuple[MaintenanceGuard, MaintenanceGuard],
    key_prefix: str,
    redis_client: redis.Redis,
) -> None:
    parent, admin = parent_and_admin

    def child() -> dict[str, object]:
        follower = parent._watcher
        assert isinstance(follower, FeedFollower)
        follower.stale_after = 0.5
        parent.start()
        wait_for(lambda: not follower.following, timeout=10)
        wait_for(lambda: parent.current().mode is not None, timeout=10)
        return {"mode": parent.current().mode.value}  # type: ignore[union-attr]

    parent.stop(timeout=2)  # the parent's watcher stops beating (as if hung)
    pid, pipe = _fork(child)
    wait_for(lambda: subscribers(redis_client, key_prefix) == 1, timeout=10)  # the child's
    admin.enable("normal", reason="parent gone", by="test")
    assert _result(pid, pipe)["mode"] == "normal"


def test_prefork_pool_processes_follow_the_worker_without_subscribing(
    redis_broker: Broker,
    start_worker: StartWorker,
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    key_prefix: str,
) -> None:
    queue = new_queue(redis_broker)
    producer = make_app(
        broker=redis_broker.url,
        redis_url=redis_broker.redis_url,
        prefix=key_prefix,
        queue=queue,
        guard=guard,
    )
    # The test's own guard subscribes from its watcher thread: count from once it has.
    guard.start()
    wait_for(lambda: subscribers(redis_client, key_prefix) == 1, timeout=5)
    before = subscribers(redis_client, key_prefix)
    worker = start_worker(redis_broker, queue)
    try:
        for i in range(6):  # pool processes start their guard when they run a task
            producer.tasks["mgtest.read"].delay(f"warm-{i}")
    finally:
        uninstall(producer)
    status = guard.enable("normal", reason="pool follows", by="test")
    main_pid = worker.process.pid

    def children_seen() -> list[int]:
        return [
            int(r["pid"])
            for r in guard.store.read_presence().values()
            if r.get("pid") not in (main_pid, os.getpid())
            and (r.get("version") or 0) >= status.version
        ]

    wait_for(lambda: len(children_seen()) >= 1, timeout=30)
    assert subscribers(redis_client, key_prefix) - before == 1  # the worker's main process


def test_a_late_notification_never_moves_a_process_back(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    guard = make_guard()
    first = guard.enable("normal", reason="first", by="test")
    second = guard.post_update("newer", by="test")
    # The notification of `first` arrives after this process installed its own `second`.
    guard.install_pushed(first)
    assert guard.current().version == second.version
    # A pushed state of another history (Redis restarted empty) is real, lower or not.
    other = replace(first, generation="another-history", version=1)
    guard.install_pushed(other)
    assert (guard.current().generation, guard.current().version) == ("another-history", 1)
