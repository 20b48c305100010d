"""Emergency mode on a shared, faulty fleet: real prefork workers on a Redis broker.

Another app's workers on the same broker (and the same remote-control exchange) are
never touched; a hung worker is reported, not silently skipped; reserved messages do not
start; an emergency called off stops at once and kills nothing; a disable racing the
pause leaves nobody paused; a second emergency during the first is refused.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from maintenance_guard import MaintenanceGuard, MaintenanceMode
from maintenance_guard.deferred import DeferredQueue
from maintenance_guard.emergency import EmergencyInProgress, EmergencyRecords
from maintenance_guard.inflight import InflightRegistry
from tests.cleanup import delete_prefix, prefix_owners
from tests.helpers import wait_for
from tests.integration.celery_support import Broker, new_queue, redis_broker
from tests.reliability.fleet_app import (
    LONG,
    SHORT,
    Fleet,
    cleanup_key,
    conf,
    finished,
    fleet,
    send,
    started,
)

__all__ = ["conf", "fleet", "redis_broker"]  # fixtures used by name


@pytest.fixture
def second_prefix(
    request: pytest.FixtureRequest, redis_url: str, cleanup_after_test: list[Callable[[], None]]
) -> str:
    """Another app's key prefix, cleaned up like the test's own (after every process)."""
    prefix = f"mgtest-b-{uuid.uuid4().hex[:8]}"
    prefix_owners[prefix] = request.node.nodeid
    cleanup_after_test.append(lambda: delete_prefix(redis_url, prefix))
    return prefix


def test_an_emergency_pauses_and_terminates_only_the_workers_of_its_own_app(
    second_prefix: str,
    fleet: Fleet,
    conf: dict[str, Any],
    redis_broker: Broker,
    make_guard: Callable[..., MaintenanceGuard],
    redis_client: redis.Redis,
) -> None:
    # App B: its own key prefix and queue, on the same broker and the same remote-control
    # exchange as app A, so a broadcast without a destination would reach B's workers.
    shared_control = f"mgctl-{conf['queue']}"
    prefix_b = second_prefix
    conf_a = {**conf, "control": shared_control}
    conf_b = {
        **conf,
        "prefix": prefix_b,
        "queue": new_queue(redis_broker),
        "control": shared_control,
    }
    worker_a = fleet.worker("fleet-a", **conf_a)
    workers_b = [fleet.worker(f"fleet-b{i}", **conf_b) for i in range(2)]
    app_a, app_b = fleet.producer(**conf_a), fleet.producer(**conf_b)
    job_a = send(app_a, LONG, "a-long", seconds=60)
    jobs_b = [send(app_b, LONG, f"b-long{i}", seconds=8) for i in range(2)]
    wait_for(lambda: "a-long" in started(redis_client, conf["prefix"]), 30)
    wait_for(lambda: len(started(redis_client, prefix_b)) == 2, 30)

    guard_a = make_guard()
    report = guard_a.emergency("leak in A", grace_period=1, kill_after=2, celery_app=app_a)

    assert report.workers == [worker_a.hostname]
    assert report.consumers_cancelled == {worker_a.hostname: [conf_a["queue"]]}
    assert [j.id for j in report.terminated] == [job_a]
    assert report.not_stopped == [] and report.unreachable == []
    # B's jobs were never touched: they run to their end, and B's workers consume.
    wait_for(lambda: len(finished(redis_client, prefix_b)) == 2, 30)
    assert redis_client.lrange(cleanup_key(prefix_b), 0, -1) == []
    send(app_b, SHORT, "b-after")
    wait_for(lambda: "b-after" in finished(redis_client, prefix_b), 30)
    # Nothing of B is recorded under A's prefix, nor anything at all under B's.
    records_a = EmergencyRecords(guard_a.store)
    assert {j.id for j in records_a.terminated()} == {job_a}
    assert set(records_a.cancelled()) == {worker_a.hostname}
    assert not set(jobs_b) & set(records_a.terminated_ids())
    assert not redis_client.exists(f"{{{prefix_b}}}:emergency:terminated")
    assert all(w.hostname not in records_a.cancelled() for w in workers_b)
    # A job the emergency terminated is recorded as terminated, not as lost.
    assert InflightRegistry(guard_a.store).lost() == []


def test_a_hung_worker_is_reported_with_its_jobs_not_stopped_and_pauses_itself_on_waking(
    fleet: Fleet,
    conf: dict[str, Any],
    redis_broker: Broker,
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
) -> None:
    # acks_late keeps each worker's prefetch window to its two pool processes, so the
    # first two jobs run on the worker about to hang and the next two on the other.
    strict = {**conf, "acks_late": True}
    app = fleet.producer(**strict)
    hung = fleet.worker("fleet-hung", **strict)
    jobs = [send(app, LONG, f"long{i}", seconds=6) for i in range(2)]
    wait_for(lambda: len(started(redis_client, conf["prefix"])) == 2, 30)
    live = fleet.worker("fleet-live", **strict)
    jobs += [send(app, LONG, f"long{i}", seconds=6) for i in range(2, 4)]
    wait_for(lambda: len(started(redis_client, conf["prefix"])) == 4, 30)
    on_hung = {j.id for j in _jobs_of(guard, hung.hostname)}
    assert on_hung == set(jobs[:2])
    os.killpg(hung.process.pid, signal.SIGSTOP)
    try:
        report = guard.emergency("leak", grace_period=1, kill_after=1, celery_app=app)
    finally:
        os.killpg(hung.process.pid, signal.SIGCONT)

    assert report.workers == [live.hostname]
    assert [u["worker"] for u in report.unreachable] == [hung.hostname]
    assert any(hung.hostname in w and "did not answer" in w for w in report.warnings)
    assert {j["id"] for j in report.not_stopped} == on_hung
    assert {j.id for j in report.terminated} == set(jobs) - on_hung
    # Woken during the emergency, the hung worker stops consuming by itself.
    records = EmergencyRecords(guard.store)
    wait_for(lambda: hung.hostname in records.cancelled(), 15)
    with MaintenanceGuard.admin_bypass():  # an admin's job: it would run if consumed
        send(app, SHORT, "queued")
    time.sleep(1.0)  # a worker still consuming would take it within this second
    assert redis_broker.queue_length(conf["queue"]) == 1
    guard.disable(by="ops")
    wait_for(lambda: "queued" in finished(redis_client, conf["prefix"]), 30)


def _jobs_of(guard: MaintenanceGuard, worker: str) -> list[Any]:
    from maintenance_guard.inflight import InflightRegistry

    return [j for j in InflightRegistry(guard.store).jobs() if j.worker == worker]


def test_reserved_messages_do_not_start_during_an_emergency_and_run_once_after(
    fleet: Fleet,
    conf: dict[str, Any],
    redis_broker: Broker,
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
) -> None:
    # One pool process, prefetch on, acks_late off (the example config): three short jobs
    # wait reserved in the worker while the long one runs.
    prefetching = {**conf, "prefetch": 4}
    fleet.worker("fleet-prefetch", concurrency=1, **prefetching)
    app = fleet.producer(**prefetching)
    long_id = send(app, LONG, "long", seconds=60)
    wait_for(lambda: "long" in started(redis_client, conf["prefix"]), 30)
    shorts = [send(app, SHORT, f"short{i}", seconds=0.1) for i in range(3)]
    wait_for(lambda: redis_broker.queue_length(conf["queue"]) == 0, 30)  # all reserved

    report = guard.emergency("leak", grace_period=1, kill_after=2, celery_app=app)
    assert [j.id for j in report.terminated] == [long_id]
    # The pool slot the long job freed must not start the reserved ones.
    deferred = DeferredQueue(guard.store)
    wait_for(lambda: {e.id for e in deferred.entries()} == set(shorts), 30)
    assert {e.source for e in deferred.entries()} == {"worker-start"}
    assert started(redis_client, conf["prefix"]) == ["long"]

    guard.disable(by="ops")
    wait_for(lambda: len(finished(redis_client, conf["prefix"])) == 3, 30)
    time.sleep(0.5)  # a second run of any of them would show up here
    assert sorted(started(redis_client, conf["prefix"])) == ["long", "short0", "short1", "short2"]
    assert len(deferred) == 0


@pytest.mark.parametrize("call_off", ["disable", "switch to normal"])
def test_an_emergency_called_off_during_its_grace_period_kills_nothing(
    call_off: str,
    fleet: Fleet,
    conf: dict[str, Any],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
) -> None:
    fleet.worker("fleet-calloff", concurrency=4, **conf)
    app = fleet.producer(**conf)
    for i in range(2):
        send(app, LONG, f"before{i}", seconds=8)
    wait_for(lambda: len(started(redis_client, conf["prefix"])) == 2, 30)

    report = guard.emergency("leak", grace_period=3, kill_after=1, celery_app=app, wait=False)
    time.sleep(1.2)
    if call_off == "disable":
        guard.disable(by="ops")
        for i in range(2):  # new work after the emergency was called off
            send(app, LONG, f"after{i}", seconds=2)
    else:
        guard.enable("normal", reason="calmer now", by="ops")
    records = EmergencyRecords(guard.store)
    wait_for(lambda: (records.report() or {}).get("phase") == "called_off", 10)
    time.sleep(3.5)  # past the end of the original grace period and kill_after

    stored = records.report()
    assert stored is not None and stored["id"] == report.id
    assert stored["terminated"] == [] and stored["not_stopped"] == []
    assert stored["called_off"]["mode"] == (None if call_off == "disable" else "normal")
    assert any("called off" in w for w in stored["warnings"])
    assert records.terminated() == []
    assert redis_client.lrange(cleanup_key(conf["prefix"]), 0, -1) == []
    expected = {"before0", "before1"} | ({"after0", "after1"} if call_off == "disable" else set())
    wait_for(lambda: set(finished(redis_client, conf["prefix"])) == expected, 30)
    assert guard.current().mode is (None if call_off == "disable" else MaintenanceMode.NORMAL)


def test_a_disable_right_after_an_emergency_leaves_no_worker_paused(
    fleet: Fleet,
    conf: dict[str, Any],
    redis_broker: Broker,
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
) -> None:
    fleet.worker("fleet-race", concurrency=2, **conf)
    app = fleet.producer(**conf)
    for round_ in range(3):
        done = threading.Event()
        threading.Thread(target=_emergency_until_done, args=(guard, app, done), daemon=True).start()
        wait_for(lambda: guard.refresh().mode is MaintenanceMode.EMERGENCY, 10, interval=0.002)
        guard.disable(by="ops")  # within milliseconds of the switch, racing the pause
        assert done.wait(30)
        tokens = {f"r{round_}-{i}" for i in range(10)}
        for token in sorted(tokens):
            send(app, SHORT, token)
        wait_for(lambda t=tokens: t <= set(finished(redis_client, conf["prefix"])), 30)  # type: ignore[misc]
        assert guard.current().mode is None


def _emergency_until_done(guard: MaintenanceGuard, app: Any, done: threading.Event) -> None:
    try:
        guard.emergency("leak", grace_period=0, kill_after=0, celery_app=app)
    finally:
        done.set()


def test_a_second_emergency_during_the_first_is_refused_and_the_stored_report_stays_true(
    fleet: Fleet,
    conf: dict[str, Any],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
) -> None:
    fleet.worker("fleet-second", concurrency=3, **conf)
    app = fleet.producer(**conf)
    short_id = send(app, LONG, "short", seconds=1)
    long_id = send(app, LONG, "long", seconds=60)
    wait_for(lambda: len(started(redis_client, conf["prefix"])) == 2, 30)

    first = guard.emergency("leak", grace_period=3, kill_after=2, celery_app=app, wait=False)
    with pytest.raises(EmergencyInProgress):
        guard.emergency("leak, again", grace_period=0, celery_app=app)
    records = EmergencyRecords(guard.store)
    wait_for(lambda: (records.report() or {}).get("phase") == "done", 30)

    stored = records.report()
    assert stored is not None and stored["id"] == first.id
    assert [j["id"] for j in stored["finished_in_grace"]] == [short_id]
    assert [j["id"] for j in stored["terminated"]] == [long_id]
    assert [j.id for j in records.terminated()] == [long_id]
    # Once the first is done, a new emergency may start.
    again = guard.emergency("leak, again", grace_period=0, celery_app=app)
    assert again.phase == "done" and again.id != first.id
