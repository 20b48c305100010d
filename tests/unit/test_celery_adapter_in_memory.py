"""Fast checks of the Celery adapter on the plugin's in-memory guard and pytest-celery's
``celery_app`` (memory broker): what is refused at publish never reaches the broker,
``uninstall`` undoes ``install``. The same rules on RabbitMQ, Redis and prefork workers
are in tests/integration/test_celery_publish.py and the reliability suite."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import chain, chord, group, signals

from maintenance_guard import MaintenanceActive, MaintenanceGuard, MemoryStore
from maintenance_guard.celery import GuardedTask, install, installation_of, uninstall
from maintenance_guard.deferred import MemoryDeferredQueue
from maintenance_guard.pytest import Maintenance, assert_allowed, assert_refused


@pytest.fixture
def published() -> Iterator[list[str]]:
    """Names of the tasks that reached the broker during the test."""
    names: list[str] = []

    def note(sender: Any = None, **_: Any) -> None:
        names.append(str(sender))

    signals.before_task_publish.connect(note, weak=False)
    yield names
    signals.before_task_publish.disconnect(note)


@pytest.fixture
def app(celery_app: Any, maintenance_guard: MaintenanceGuard) -> Iterator[Any]:
    @celery_app.task(name="fast.read")
    def read(x: str) -> str:
        return x

    @celery_app.task(name="fast.caption", base=GuardedTask, operation="caption_generation")
    def caption(x: str) -> str:
        return x

    @celery_app.task(name="fast.collect")
    def collect(results: list[str], label: str) -> str:
        return label

    maintenance_guard.task_operations.add("fast.read", "read")
    install(celery_app, maintenance_guard)
    yield celery_app
    uninstall(celery_app)


def test_a_guard_on_a_memory_store_keeps_everything_in_the_process(
    app: Any, maintenance_guard_store: Any
) -> None:
    if not isinstance(maintenance_guard_store, MemoryStore):
        pytest.skip("checks the in-memory parts")
    inst = installation_of(app)
    assert inst is not None
    assert inst.registry is None and isinstance(inst.deferred, MemoryDeferredQueue)


def test_a_canvas_with_a_blocked_task_is_refused_whole_before_anything_is_published(
    app: Any, maintenance: Maintenance, published: list[str]
) -> None:
    read, caption, collect = (app.tasks[f"fast.{n}"] for n in ("read", "caption", "collect"))
    with maintenance("normal"):
        for canvas in (
            chain(read.s("a"), caption.si("c")),
            group(read.s("a"), caption.s("b")),
            chord([read.s("a"), caption.s("b")], read.si("body")),
            read.signature(("a",), link=caption.si("linked")),
        ):
            assert_refused(canvas.apply_async, operation="caption_generation", mode="normal")
        assert_refused(lambda: chord([read.s("a")])(caption.si("body")))
        assert published == []
        assert_allowed(lambda: group(read.s("x"), read.s("y")).apply_async())
        assert sorted(published) == ["fast.read", "fast.read"]


def test_an_emergency_refuses_reads_and_unclassified_tasks_too(
    app: Any, maintenance: Maintenance, published: list[str]
) -> None:
    with maintenance("emergency"):
        refused = assert_refused(lambda: app.tasks["fast.read"].delay("a"), mode="emergency")
        assert isinstance(refused, MaintenanceActive) and refused.operation == "read"
        assert_refused(lambda: app.send_task("fast.collect", args=[[], "x"]), operation=None)
    assert published == []


def test_uninstall_gives_celery_its_own_send_task_back(
    celery_app: Any, maintenance_guard: MaintenanceGuard, published: list[str]
) -> None:
    own = celery_app.send_task
    receivers = len(signals.task_prerun.receivers or [])
    install(celery_app, maintenance_guard)
    assert celery_app.send_task != own
    assert len(signals.task_prerun.receivers or []) == receivers + 1
    uninstall(celery_app)
    assert celery_app.send_task == own and installation_of(celery_app) is None
    assert len(signals.task_prerun.receivers or []) == receivers
    maintenance_guard.enable("emergency", "incident")
    celery_app.send_task("anything")  # not guarded any more
    assert published == ["anything"]
    uninstall(celery_app)  # a no-op the second time
