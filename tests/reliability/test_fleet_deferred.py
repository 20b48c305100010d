"""Deferred work on a faulty fleet: nothing parked is lost, sent twice or sent to the
wrong broker, and a loss the store causes is loud.

Replayers die mid-replay, the broker is down when maintenance ends, the state store hangs
while a caller defers, Redis restarts empty with work parked, and two apps on different
brokers share one key prefix.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from celery import Celery

from maintenance_guard import MaintenanceGuard
from maintenance_guard.celery import installation_of
from maintenance_guard.deferred import DeferredQueue
from maintenance_guard.errors import DeferralUnconfirmed
from tests.conftest import RedisServer
from tests.helpers import wait_for
from tests.integration.celery_support import Broker, new_queue, redis_broker
from tests.reliability.conftest import Proc, actor
from tests.reliability.fleet_app import CAPTION, SHORT, Fleet, conf, finished, fleet, sees, started
from tests.reliability.workers import amqp_broker

__all__ = ["amqp_broker", "conf", "fleet", "redis_broker"]  # fixtures used by name


def _defer(app: Celery, n: int, name: str = SHORT, prefix: str = "d") -> list[str]:
    """Submit ``n`` jobs with on_maintenance="defer"; their task ids, in order."""
    return [
        app.send_task(name, args=[f"{prefix}{i:04d}"], on_maintenance="defer").id for i in range(n)
    ]


def test_replay_resumes_by_itself_after_the_replayer_is_killed_mid_replay(
    fleet: Fleet,
    conf: dict[str, Any],
    redis_broker: Broker,
    guard: MaintenanceGuard,
    spawn: Callable[..., Proc],
) -> None:
    parker = fleet.producer(**conf)
    guard.enable("normal", reason="migration", by="ops")
    sees(parker, True)
    ids = _defer(parker, 3000)
    installation_of(parker).guard.stop()  # type: ignore[union-attr]  # it does not replay
    first = spawn(*actor("fleet", "-", "-", json.dumps(conf)))
    first.expect("ready")

    guard.disable(by="ops")
    queue = conf["queue"]
    wait_for(lambda: redis_broker.queue_length(queue) >= 200, 30, interval=0.002)
    os.killpg(first.proc.pid, signal.SIGKILL)  # mid-replay, holding the replay lock
    first.proc.wait(10)
    deferred = DeferredQueue(guard.store)
    assert len(deferred) > 0, "the replay finished before it could be interrupted"
    second = spawn(*actor("fleet", "-", "-", json.dumps(conf)))
    second.expect("ready")

    # The dead replayer's lock expires (10 s at most) and the second process resumes by
    # itself: no state change, no operator.
    wait_for(lambda: len(deferred) == 0, 40)
    stuck = {e.id for e in deferred.replaying()}
    assert len(stuck) <= 1  # the one the dead replayer had claimed, if any: listed
    queued = redis_broker.queued_ids(queue)
    assert len(queued) == len(set(queued))  # nothing sent twice
    assert [i for i in queued if i not in stuck] == [i for i in ids if i not in stuck]


def test_parked_work_is_sent_in_order_once_the_broker_is_back(
    fleet: Fleet,
    conf: dict[str, Any],
    private_redis: RedisServer,
    guard: MaintenanceGuard,
) -> None:
    broker = Broker("redis", private_redis.url, conf["state_url"])
    on_private = {**conf, "broker": private_redis.url}
    app = fleet.producer(**on_private)
    guard.enable("normal", reason="migration", by="ops")
    sees(app, True)
    ids = _defer(app, 40)

    private_redis.stop()  # the broker is down when maintenance ends
    guard.disable(by="ops")
    wait_for(lambda: any(e.type == "disabled" for e in guard.events(limit=3)), 5)
    time.sleep(3)  # the replayer fails and backs off meanwhile
    parked = DeferredQueue(guard.store)
    # Nothing lost, nothing half-sent (an entry being retried right now is "replaying").
    assert len(parked) + len(parked.replaying()) == 40
    private_redis.start()

    wait_for(lambda: broker.queue_length(conf["queue"]) == 40, 40)
    assert broker.queued_ids(conf["queue"]) == ids
    assert len(DeferredQueue(guard.store)) == 0


def test_a_deferral_whose_write_timed_out_says_so_and_a_resubmission_runs_once(
    fleet: Fleet,
    conf: dict[str, Any],
    private_redis: RedisServer,
    make_guard: Callable[..., MaintenanceGuard],
    redis_client: redis.Redis,
) -> None:
    hanging = {**conf, "state_url": private_redis.url}
    fleet.worker("fleet-defer", **hanging)
    app = fleet.producer(**hanging)
    admin = make_guard(url=private_redis.url)
    admin.enable("normal", reason="migration", by="ops")
    sees(app, True)
    caption = app.tasks[CAPTION]
    tokens = [f"c{i}" for i in range(5)]
    raised: dict[str, BaseException] = {}

    def defer(token: str) -> None:
        try:
            caption.apply_async((token,), on_maintenance="defer")
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertions
            raised[token] = exc

    # Warm the connection pool (parking eight others at once), so the deferrals below
    # find open connections: their writes reach the hung server and land when it wakes.
    warm = [f"w{i}" for i in range(8)]
    threads = [threading.Thread(target=defer, args=(t,)) for t in warm]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not raised
    assert private_redis.process is not None
    os.kill(private_redis.process.pid, signal.SIGSTOP)  # hung, not down
    try:
        threads = [threading.Thread(target=defer, args=(t,)) for t in tokens]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        os.kill(private_redis.process.pid, signal.SIGCONT)  # the writes land now

    assert set(raised) == set(tokens)
    assert all(isinstance(e, DeferralUnconfirmed) for e in raised.values()), raised
    task_ids = {t: raised[t].task_id for t in tokens}  # type: ignore[attr-defined]
    assert all(task_ids.values())
    # "Refused" would be a lie: writes sent before the timeout landed when Redis woke.
    parked = DeferredQueue(admin.store)
    wait_for(lambda: set(task_ids.values()) & {e.id for e in parked.entries()}, 5)
    # The callers submit again with the same id: during maintenance...
    for token in tokens[:3]:
        result = caption.apply_async((token,), task_id=task_ids[token], on_maintenance="defer")
        assert result.id == task_ids[token]
    admin.disable(by="ops")
    sees(app, False)
    # ...and after it ended: the guard finds the earlier deferral and does not publish.
    for token in tokens[3:]:
        result = caption.apply_async((token,), task_id=task_ids[token])
        assert result.id == task_ids[token]

    everything = tokens + warm
    wait_for(lambda: set(everything) <= set(finished(redis_client, conf["prefix"])), 30)
    time.sleep(1.0)  # a second run of any of them would show up here
    assert sorted(started(redis_client, conf["prefix"])) == sorted(everything)  # each once


def test_parked_work_lost_in_an_empty_restart_is_reported_loudly_once(
    fleet: Fleet,
    conf: dict[str, Any],
    private_redis: RedisServer,
    make_guard: Callable[..., MaintenanceGuard],
    caplog: pytest.LogCaptureFixture,
) -> None:
    on_private = {**conf, "state_url": private_redis.url}
    app = fleet.producer(**on_private)
    admin = make_guard(url=private_redis.url)
    admin.enable("normal", reason="migration", by="ops")
    sees(app, True)
    _defer(app, 40)

    with caplog.at_level(logging.WARNING, logger="maintenance_guard"):
        private_redis.stop()
        private_redis.start()  # back, empty: no RDB, no AOF
        wait_for(lambda: any(e.type == "deferred_lost" for e in admin.events(limit=20)), 30)
    lost = [e for e in admin.events(limit=50) if e.type == "deferred_lost"]
    assert len(lost) == 1 and lost[0].fields["known"] == "40"
    assert any("40 parked submission(s)" in r.getMessage() for r in caplog.records)
    env = dict(os.environ, MAINTENANCE_GUARD_REDIS_URL=private_redis.url,
               MAINTENANCE_GUARD_KEY_PREFIX=conf["prefix"])  # fmt: skip
    listed = subprocess.run(
        [sys.executable, "-m", "maintenance_guard.cli", "deferred"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "lost 40 deferred submission(s)" in listed.stderr, listed.stderr


def test_two_apps_on_different_brokers_sharing_a_prefix_replay_only_their_own_work(
    fleet: Fleet,
    conf: dict[str, Any],
    redis_broker: Broker,
    amqp_broker: Broker,
    guard: MaintenanceGuard,
    caplog: pytest.LogCaptureFixture,
) -> None:
    conf_b = {**conf, "broker": amqp_broker.url, "queue": new_queue(amqp_broker)}
    with caplog.at_level(logging.WARNING, logger="maintenance_guard"):
        app_a = fleet.producer(**conf)
        app_b = fleet.producer(**conf_b)
    assert any(getattr(r, "mg_event", None) == "prefix_shared" for r in caplog.records)
    guard.enable("normal", reason="migration", by="ops")
    sees(app_a, True)
    sees(app_b, True)
    ids_a = _defer(app_a, 30, prefix="a")
    ids_b = _defer(app_b, 20, prefix="b")

    guard.disable(by="ops")
    wait_for(
        lambda: (
            redis_broker.queue_length(conf["queue"]) == 30
            and amqp_broker.queue_length(conf_b["queue"]) == 20
        ),
        30,
    )
    assert redis_broker.queued_ids(conf["queue"]) == ids_a
    assert len(DeferredQueue(guard.store)) == 0
    assert len(ids_b) == 20
