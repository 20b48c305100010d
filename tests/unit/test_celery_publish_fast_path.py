"""The publish fast path (maintenance off: an identity check of the guard's snapshot and
the stamps) on the plugin's in-memory guard and pytest-celery's ``celery_app``: it
follows every change of state, and its timestamp orders as the clocks do."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import signals

from maintenance_guard import MaintenanceGuard
from maintenance_guard.celery import GuardedTask, install, installation_of, uninstall
from maintenance_guard.celery.context import stamp_time
from maintenance_guard.pytest import Maintenance, assert_refused


@pytest.fixture
def stamps() -> Iterator[list[dict[str, Any]]]:
    """The headers of every message published during the test."""
    seen: list[dict[str, Any]] = []

    def note(headers: dict[str, Any] | None = None, **_: Any) -> None:
        seen.append(dict(headers or {}))

    signals.before_task_publish.connect(note, weak=False)
    yield seen
    signals.before_task_publish.disconnect(note)


@pytest.fixture
def app(celery_app: Any, maintenance_guard: MaintenanceGuard) -> Iterator[Any]:
    @celery_app.task(name="fast.caption", base=GuardedTask, operation="caption_generation")
    def caption(x: str) -> str:
        return x

    install(celery_app, maintenance_guard)
    yield celery_app
    uninstall(celery_app)


def test_the_fast_path_follows_the_state_from_one_publish_to_the_next(
    app: Any, maintenance: Maintenance, stamps: list[dict[str, Any]]
) -> None:
    caption = app.tasks["fast.caption"]
    inst = installation_of(app)
    assert inst is not None
    caption.delay("a")
    assert inst.quiet is inst.guard.snapshot  # the next publish is one identity check
    with maintenance("normal"):
        assert_refused(lambda: caption.delay("b"), operation="caption_generation")
        assert_refused(lambda: app.send_task("fast.caption", args=["c"]))
    caption.apply_async(("d",), headers={"mine": "1", "mg_guarded": "0"})
    assert len(stamps) == 2
    for headers in stamps:
        assert headers["mg_guarded"] == "1"
        assert float(headers["mg_published_at"]) == pytest.approx(inst.guard.now(), abs=60)
    assert stamps[1]["mine"] == "1"


def test_a_bad_on_maintenance_is_refused_on_the_fast_path_too(app: Any) -> None:
    with pytest.raises(ValueError):
        app.tasks["fast.caption"].apply_async(("a",), on_maintenance="later")
    with pytest.raises(ValueError):
        app.send_task("fast.caption", args=["a"], on_maintenance="later")


def test_the_publish_stamp_is_cut_to_the_microsecond_and_orders_as_the_clocks_do() -> None:
    assert stamp_time(1796289246.0) == "1796289246.000000"
    assert stamp_time(1796289246.1234567) == "1796289246.123456"
    started = "1796289246.123457"  # a state time, as Redis writes its clock
    for published in (1796289246.1234565, 1796289246.123456999, 1796289246.12345):
        assert (float(stamp_time(published)) < float(started)) == (published < float(started))
    for published in (1796289246.123457, 1796289246.1234571, 1796289246.2):
        assert (float(stamp_time(published)) < float(started)) == (published < float(started))
