"""Scheduled windows with Celery on a real Redis broker: a submission that would still
run when a window opens is refused (or deferred until after it), read from the broker's
own queue length; deferred work waits for the window and goes out when it is cancelled.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from maintenance_guard import MaintenanceGuard
from maintenance_guard.celery import GuardedTask, installation_of
from maintenance_guard.errors import InvalidInput, MaintenanceUpcoming
from maintenance_guard.windows import iso_z
from tests.helpers import wait_for
from tests.integration.celery_support import Broker, make_app, new_queue, uninstall


@pytest.fixture
def setup(
    guard: MaintenanceGuard,
    redis_url: str,
    key_prefix: str,
    cleanup_after_test: list[Callable[[], None]],
):  # type: ignore[no-untyped-def]
    broker = Broker("redis", redis_url, redis_url)
    cleanup_after_test.append(broker.cleanup)
    queue = new_queue(broker)
    app = make_app(
        broker=broker.url, redis_url=redis_url, prefix=key_prefix, queue=queue, guard=guard
    )

    @app.task(shared=False, name="mgtest.reindex", base=GuardedTask,
              operation="batch_operations", expected_runtime=3600)  # fmt: skip
    def reindex(token: str) -> str:
        return token

    @app.task(
        shared=False,
        name="mgtest.reindex_later",
        base=GuardedTask,
        operation="batch_operations",
        expected_runtime=3600,
        on_maintenance="defer",
    )
    def reindex_later(token: str) -> str:
        return token

    @app.task(shared=False, name="mgtest.quick", base=GuardedTask,
              operation="batch_operations", expected_runtime=5)  # fmt: skip
    def quick(token: str) -> str:
        return token

    yield app, broker, queue
    uninstall(app)


def test_long_work_is_refused_before_a_window_and_short_work_still_goes(
    setup,
    guard: MaintenanceGuard,  # type: ignore[no-untyped-def]
) -> None:
    app, broker, queue = setup
    window = guard.windows.add(iso_z(time.time() + 1800), "1h", reason="db upgrade", by="ops")
    with pytest.raises(MaintenanceUpcoming) as refused:
        app.tasks["mgtest.reindex"].delay("long")
    assert "takes about 60 min" in str(refused.value)
    assert refused.value.window_id == window.id
    with pytest.raises(MaintenanceUpcoming):
        app.send_task("mgtest.reindex", ["by-name"])  # the same through send_task
    app.tasks["mgtest.quick"].delay("short")
    app.tasks["mgtest.read"].delay("unrelated")
    assert broker.queue_length(queue) == 2
    guard.windows.cancel(window.id, by="ops")
    app.tasks["mgtest.reindex"].delay("long")  # no window: it goes
    assert broker.queue_length(queue) == 3


def test_a_per_call_defer_policy_holds_for_a_window_lead_time(
    setup,
    guard: MaintenanceGuard,  # type: ignore[no-untyped-def]
) -> None:
    app, broker, queue = setup
    guard.windows.add(iso_z(time.time() + 1800), "1h", reason="db upgrade", by="ops")
    result = app.tasks["mgtest.reindex"].apply_async(("per-call",), on_maintenance="defer")
    inst = installation_of(app)
    assert inst is not None
    assert inst.deferred.state_of(result.id) == "parked"  # deferred, not refused
    assert broker.queue_length(queue) == 0


def test_deferred_long_work_waits_for_the_window_and_goes_when_it_is_cancelled(
    setup,
    guard: MaintenanceGuard,  # type: ignore[no-untyped-def]
) -> None:
    app, broker, queue = setup
    window = guard.windows.add(iso_z(time.time() + 1800), "1h", reason="db upgrade", by="ops")
    result = app.tasks["mgtest.reindex_later"].delay("later")
    inst = installation_of(app)
    assert inst is not None
    assert inst.deferred.state_of(result.id) == "parked"
    assert [w.holds_deferred for w in guard.refresh().windows] == [True]
    inst.request_replay()
    time.sleep(0.5)
    assert broker.queue_length(queue) == 0  # held until after the window
    assert inst.replay_deferred() == 0
    guard.windows.cancel(window.id, by="ops")  # cancelled: nothing to wait for
    wait_for(lambda: broker.queue_length(queue) == 1, timeout=10)
    assert inst.deferred.state_of(result.id) == "sent"


def test_a_bad_expected_runtime_is_a_clear_error_even_with_no_window(
    setup,
    guard: MaintenanceGuard,  # type: ignore[no-untyped-def]
) -> None:
    app, broker, queue = setup

    @app.task(shared=False, name="bad", base=GuardedTask, operation="read", expected_runtime=-1)
    def bad() -> None:
        return None

    with pytest.raises(InvalidInput, match="expected_runtime must be seconds"):
        bad.delay()
    assert broker.queue_length(queue) == 0


def test_refusals_before_a_window_are_counted(
    setup,
    guard: MaintenanceGuard,
    redis_client: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    app, _broker, _queue = setup
    guard.windows.add(iso_z(time.time() + 600), "1h", reason="db upgrade", drain_before="1h")
    with pytest.raises(MaintenanceUpcoming, match="new work of this kind has stopped"):
        app.tasks["mgtest.quick"].delay("in the drain period")
    counts = guard.attempt_counts()
    assert counts["before_window"]["batch_operations"]["publish"] == 1


def test_a_scheduled_window_survives_a_redis_that_lost_the_state(
    make_guard: Callable[..., MaintenanceGuard], redis_client: redis.Redis
) -> None:
    admin, other = make_guard(), make_guard()
    other.start()
    window = admin.windows.add(iso_z(time.time() + 3600), "1h", reason="db upgrade")
    wait_for(lambda: other.current().windows, timeout=5)
    redis_client.delete(admin.store.state_key)  # a Redis restarted without persistence
    wait_for(lambda: admin.store.load_state() is not None, timeout=5)
    restored = admin.store.load_state()
    assert restored is not None and [w.id for w in restored.windows] == [window.id]
