"""Enabling maintenance while producers publish continuously (guarded Celery, real RabbitMQ).

Every publish is timed. Those that finished before ``enable`` was called must all have been
published; those that began after ``enable`` returned plus the propagation bound (one poll
interval, the guarantee when a pub/sub notification is lost) must all have been refused.
In between either is allowed. The broker's own queue length must equal the publishes that
succeeded, so no refused publish left a message. Counts and the observed switch-over are
recorded as junit properties.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from maintenance_guard import MaintenanceActive, MaintenanceGuard
from tests.helpers import wait_for
from tests.reliability.publishing import TASK_OPERATIONS, guarded_producer, queue_length

POLL = 0.2
BOUND = POLL  # worst case: the notification is lost and the version poll repairs it
PRODUCERS = 4


@pytest.mark.slow
def test_after_enable_and_the_propagation_bound_every_blocked_publish_is_refused_none_before(
    make_guard: Callable[..., MaintenanceGuard],
    record_property: Callable[[str, object], None],
) -> None:
    producer_guard = make_guard(poll_interval=POLL, task_operations=TASK_OPERATIONS)
    admin = make_guard(poll_interval=POLL)
    producer_guard.start()
    wait_for(lambda: producer_guard.state_known)

    with guarded_producer(producer_guard) as (app, queue):
        stop = threading.Event()
        results: list[tuple[float, float, str]] = []
        lock = threading.Lock()
        errors: list[str] = []

        def produce(n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                began = time.monotonic()
                try:
                    app.send_task("rel.caption", args=[f"p{n}-{i}"])
                    outcome = "published"
                except MaintenanceActive:
                    outcome = "refused"
                except Exception as exc:  # anything else is a failure of the test
                    errors.append(repr(exc))
                    continue
                with lock:
                    results.append((began, time.monotonic(), outcome))

        threads = [
            threading.Thread(target=produce, args=(n,), daemon=True) for n in range(PRODUCERS)
        ]
        for t in threads:
            t.start()
        wait_for(lambda: len(results) >= 200, timeout=30)
        called = time.monotonic()
        admin.enable("normal", reason="switch under load", by="ops")
        returned = time.monotonic()
        wait_for(lambda: sum(1 for b, _, _ in results if b > returned + BOUND) >= 200, timeout=30)
        stop.set()
        for t in threads:
            t.join(10)
        published = sum(1 for _, _, outcome in results if outcome == "published")
        wait_for(lambda: queue_length(queue) == published, timeout=15)

    assert not errors, errors[:5]
    before = [r for r in results if r[1] < called]
    after = [r for r in results if r[0] > returned + BOUND]
    window = len(results) - len(before) - len(after)
    assert before and after
    assert all(outcome == "published" for _, _, outcome in before)
    assert all(outcome == "refused" for _, _, outcome in after)
    last_published = max((b for b, _, o in results if o == "published"), default=called)
    record_property("published_before_enable", len(before))
    record_property("refused_after_bound", len(after))
    record_property("in_window", window)
    record_property(
        "last_publish_started_after_enable_return_ms", round((last_published - returned) * 1000, 2)
    )


@pytest.mark.slow
def test_refused_publishes_leave_nothing_on_the_broker_under_load(
    make_guard: Callable[..., MaintenanceGuard],
    record_property: Callable[[str, object], None],
) -> None:
    producer_guard = make_guard(poll_interval=POLL, task_operations=TASK_OPERATIONS)
    admin = make_guard(poll_interval=POLL)
    producer_guard.start()
    with guarded_producer(producer_guard) as (app, queue):
        published = [0]
        refused = [0]
        lock = threading.Lock()
        stop = threading.Event()

        def produce() -> None:
            while not stop.is_set():
                try:
                    app.send_task("rel.caption", args=["x"])
                    key = published
                except MaintenanceActive:
                    key = refused
                with lock:
                    key[0] += 1

        threads = [threading.Thread(target=produce, daemon=True) for _ in range(PRODUCERS)]
        for t in threads:
            t.start()
        wait_for(lambda: published[0] >= 200, timeout=30)
        admin.enable("normal", reason="switch under load", by="ops")
        wait_for(lambda: refused[0] >= 500, timeout=30)
        admin.disable(by="ops")
        wait_for(lambda: published[0] >= 400, timeout=30)
        admin.enable("emergency", reason="again", by="ops")
        wait_for(lambda: refused[0] >= 1000, timeout=30)
        stop.set()
        for t in threads:
            t.join(10)
        wait_for(lambda: queue_length(queue) == published[0], timeout=15)
        record_property("published", published[0])
        record_property("refused", refused[0])
