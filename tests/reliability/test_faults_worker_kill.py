"""Workers SIGKILLed mid-task and restarted during maintenance (real prefork workers).

In-flight records carry a heartbeat deadline (``heartbeat_timeout``, 3 s here); a record
whose worker died drops out once it passes. With ``acks_late`` RabbitMQ redelivers the
killed job's message to the next worker, which applies the maintenance policy to it like
to any message: run it (published before a normal maintenance), or defer it (emergency)
and run it once after. Nothing runs a second time beyond that one redelivery.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
import redis
from celery import Celery

from maintenance_guard import MaintenanceGuard
from maintenance_guard.deferred import DeferredQueue
from maintenance_guard.inflight import InflightRegistry
from tests.helpers import wait_for
from tests.integration.celery_support import Broker, new_queue, runs
from tests.reliability.workers import StartRelWorker, amqp_broker, producers, rel_worker

__all__ = ["amqp_broker", "producers", "rel_worker"]

HEARTBEAT = {"heartbeat_interval": 0.5, "heartbeat_timeout": 3.0}


def running(registry: InflightRegistry, task_id: str) -> list[int]:
    return [job.pid for job in registry.jobs() if job.id == task_id]


def kill_mid_task_and_wait_for_expiry(
    registry: InflightRegistry,
    task_id: str,
    kill: Callable[[list[int]], None],
    record_property: Callable[[str, object], None],
) -> float:
    pids = wait_for(lambda: running(registry, task_id), timeout=30)
    assert isinstance(pids, list)
    killed_at = time.monotonic()
    kill(pids)
    # The dead job's heartbeat stops; its record must go once the deadline passes.
    wait_for(lambda: not running(registry, task_id), timeout=HEARTBEAT["heartbeat_timeout"] + 5)
    gone_after = time.monotonic() - killed_at
    record_property("inflight_gone_after_kill_seconds", round(gone_after, 2))
    return gone_after


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["normal", "emergency"])
def test_killed_worker_job_drops_out_and_its_redelivery_follows_the_maintenance_policy(
    mode: str,
    amqp_broker: Broker,
    rel_worker: StartRelWorker,
    producers: Callable[..., Celery],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    key_prefix: str,
    record_property: Callable[[str, object], None],
) -> None:
    queue = new_queue(amqp_broker)
    doomed = rel_worker(amqp_broker, queue, name="doomed", acks_late=True, **HEARTBEAT)
    producer = producers(amqp_broker, queue)
    plain = producers(amqp_broker, queue, guarded=False)
    registry = InflightRegistry(guard.store)
    job = producer.send_task("mgtest.spin", args=["long", 2.0])

    def kill_once_the_body_runs(_pids: list[int]) -> None:
        # the in-flight record appears just before the task body records its run
        wait_for(lambda: runs(redis_client, key_prefix) == ["long"], timeout=10)
        doomed.kill()

    kill_mid_task_and_wait_for_expiry(registry, job.id, kill_once_the_body_runs, record_property)
    assert guard.status().active_jobs_count == 0
    assert runs(redis_client, key_prefix) == ["long"]  # started once, never finished

    # Maintenance begins while no worker is alive; a producer without the guard then
    # publishes a blocked task. The replacement worker must be right from its first message.
    guard.enable(mode, reason="worker died", by="ops")
    plain.send_task("mgtest.caption", args=["during-no-guard"])
    rel_worker(amqp_broker, queue, name="replacement", acks_late=True, **HEARTBEAT)
    deferred = DeferredQueue(guard.store)
    if mode == "normal":
        # Published before maintenance began: the redelivery runs, once, to the end.
        wait_for(lambda: job.state == "SUCCESS", timeout=30)
        wait_for(lambda: len(deferred) == 1, timeout=30)
        assert [e.task for e in deferred.entries()] == ["mgtest.caption"]
    else:
        # Emergency runs no blocked message: both are parked, neither runs.
        wait_for(lambda: len(deferred) == 2, timeout=30)
        assert sorted(e.task for e in deferred.entries()) == ["mgtest.caption", "mgtest.spin"]
        assert job.state == "PENDING"
    assert "during-no-guard" not in runs(redis_client, key_prefix)
    assert amqp_broker.queue_length(queue) == 0

    guard.disable(by="ops")
    wait_for(lambda: job.state == "SUCCESS", timeout=30)
    wait_for(lambda: "during-no-guard" in runs(redis_client, key_prefix), timeout=30)
    wait_for(lambda: len(deferred) == 0 and not deferred.replaying(), timeout=30)
    wait_for(lambda: not registry.jobs(), timeout=30)
    done = runs(redis_client, key_prefix)
    assert done.count("long") == 2  # the killed attempt and its one redelivery
    assert done.count("during-no-guard") == 1
    assert amqp_broker.queue_length(queue) == 0


@pytest.mark.slow
def test_pool_child_killed_mid_task_drops_out_and_is_not_rerun(
    amqp_broker: Broker,
    rel_worker: StartRelWorker,
    producers: Callable[..., Celery],
    guard: MaintenanceGuard,
    redis_client: redis.Redis,
    key_prefix: str,
    record_property: Callable[[str, object], None],
) -> None:
    queue = new_queue(amqp_broker)
    rel_worker(amqp_broker, queue, name="survivor", acks_late=True, **HEARTBEAT)
    producer = producers(amqp_broker, queue)
    registry = InflightRegistry(guard.store)
    job = producer.send_task("mgtest.spin", args=["child", 2.0])

    def kill_child(pids: list[int]) -> None:
        # the in-flight record appears just before the task body records its run
        wait_for(lambda: runs(redis_client, key_prefix) == ["child"], timeout=10)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    pids = wait_for(lambda: running(registry, job.id), timeout=30)
    kill_mid_task_and_wait_for_expiry(registry, job.id, kill_child, record_property)
    # Celery reports the lost child (WorkerLostError); without reject_on_worker_lost the
    # message is acked, so it is not run again.
    wait_for(lambda: job.state == "FAILURE", timeout=30)
    # The worker's main process recorded it lost (for drain), with the child's details.
    lost = wait_for(lambda: [j for j in registry.lost() if j.id == job.id], timeout=10)
    assert isinstance(lost, list) and isinstance(pids, list)
    assert (lost[0].name, lost[0].pid) == ("mgtest.spin", pids[0])
    after = producer.send_task("mgtest.read", args=["after"])
    wait_for(lambda: after.state == "SUCCESS", timeout=30)
    assert runs(redis_client, key_prefix).count("child") == 1
    assert amqp_broker.queue_length(queue) == 0
    assert guard.status().active_jobs_count == 0
