"""Scheduled windows and progress updates in the core, on a MemoryStore whose clock the
test moves: parsing, overlaps, announcing and starting once across processes, cancel,
reschedule, refusal before a window, updates."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from maintenance_guard import (
    GuardSettings,
    InvalidInput,
    MaintenanceGuard,
    MaintenanceMode,
    MemoryStore,
)
from maintenance_guard.errors import MaintenanceUpcoming
from maintenance_guard.windows import iso_z, parse_when
from tests.helpers import wait_for

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guards(clock: Clock) -> Iterator[list[MaintenanceGuard]]:
    store = MemoryStore(clock=clock)
    made = [
        MaintenanceGuard(store, GuardSettings(poll_interval=0.05), clock=clock) for _ in range(4)
    ]
    yield made
    for guard in made:
        guard.stop(timeout=2)


def at(offset: float) -> str:
    return iso_z(T0 + offset)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2027-01-15T08:00:00", "no time zone"),
        ("2027-01-15 08:00", "no time zone"),
        ("tomorrow", "not an ISO 8601 time"),
        (1800000000, "must be an ISO 8601 time"),
    ],
)
def test_times_without_a_zone_or_not_iso_are_refused(value: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_when(value)


def test_times_with_a_zone_are_read_exactly() -> None:
    assert parse_when("2027-01-15T08:00Z") == T0
    assert parse_when("2027-01-15T09:00:00+01:00") == T0


def test_bad_windows_are_refused_and_change_nothing(
    guards: list[MaintenanceGuard], clock: Clock
) -> None:
    guard = guards[0]
    guard.windows.add(at(3600), "1h", reason="db upgrade")
    for kwargs, message in [
        ({"at": at(5400), "duration": "1h"}, "overlaps window"),
        ({"at": at(-60), "duration": "1h"}, "has passed"),
        ({"at": at(9000), "duration": "1h", "mode": "emergency"}, "emergency is not scheduled"),
        ({"at": "2027-01-15T12:00:00", "duration": "1h"}, "no time zone"),
        ({"at": at(9000), "duration": "soon"}, "duration"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            guard.windows.add(reason="x", **kwargs)  # type: ignore[arg-type]
    assert len(guard.windows.list()) == 1
    with pytest.raises(InvalidInput, match="no scheduled window"):
        guard.windows.cancel("nope")


def test_a_window_is_announced_then_started_once_across_four_processes(
    guards: list[MaintenanceGuard], clock: Clock
) -> None:
    for g in guards:
        g.start()
    admin = guards[0]
    window = admin.windows.add(
        at(3600), "30m", reason="db upgrade", notice="10m", auto_end=True, by="alice"
    )
    assert admin.status().to_dict(clock.now)["upcoming"] is None  # not announced yet
    clock.now = T0 + 3000  # the notice time has passed
    wait_for(lambda: all(w.announced for w in admin.store.load_state().windows), 5)  # type: ignore[union-attr]
    upcoming = admin.status().to_dict(clock.now)["upcoming"]
    assert upcoming["id"] == window.id and upcoming["start"] == at(3600)
    assert (
        upcoming["expected_end"] == at(5400)
        and "caption_generation" in upcoming["blocked_operations"]
    )
    clock.now = T0 + 3600.5
    wait_for(lambda: all(g.current().mode is MaintenanceMode.NORMAL for g in guards), 5)
    status = admin.refresh()
    assert status.windows == () and status.started_at >= T0 + 3600
    assert status.estimated_completion == pytest.approx(T0 + 5400, abs=1.5)
    events = [e for e in admin.events() if e.fields.get("window") == window.id]
    assert [e.type for e in events] == ["enabled", "window_announced", "window_scheduled"]
    clock.now = T0 + 5401  # auto_end
    wait_for(lambda: all(not g.current().is_active for g in guards), 5)


def test_cancel_and_reschedule_move_the_window_and_are_audited(
    guards: list[MaintenanceGuard], clock: Clock
) -> None:
    guard = guards[0]
    first = guard.windows.add(at(3600), "1h", reason="one", by="alice")
    second = guard.windows.add(at(9000), "1h", reason="two", by="alice")
    with pytest.raises(InvalidInput, match="overlaps window"):
        guard.windows.reschedule(second.id, at(4000))
    moved = guard.windows.reschedule(second.id, at(20000), by="bob")
    assert moved.start_at == T0 + 20000 and moved.duration == 3600
    assert guard.windows.cancel(first.id, by="bob").id == first.id
    assert [w.id for w in guard.windows.list()] == [second.id]
    types = [e.type for e in guard.events()]
    assert types[:2] == ["window_cancelled", "window_rescheduled"]


def test_a_window_missed_whole_is_dropped_not_started(
    guards: list[MaintenanceGuard], clock: Clock
) -> None:
    guard = guards[0]
    guard.windows.add(at(60), "10m", reason="missed")
    guard.start()
    clock.now = T0 + 3600
    wait_for(lambda: not guard.store.load_state().windows, 5)  # type: ignore[union-attr]
    assert not guard.refresh().is_active
    assert guard.events()[0].type == "window_missed"


def test_work_that_would_still_run_when_a_window_opens_is_refused_with_when_to_retry(
    guards: list[MaintenanceGuard], clock: Clock
) -> None:
    guard = guards[0]
    guard.windows.add(at(3600), "1h", reason="db", drain_before="10m", operations=["job_creation"])
    guard.check_before_window("job_creation", 600)  # ends 50 min before the window
    guard.check_before_window("read", 7200)  # not blocked by this window
    guard.check_before_window("job_creation", None)  # unknown runtime, before the drain
    with pytest.raises(MaintenanceUpcoming) as refused:
        guard.check_before_window("job_creation", 4000)
    assert "takes about 67 min" in str(refused.value) and at(7200) in str(refused.value)
    assert refused.value.run_after == T0 + 7200 and refused.value.window_id
    guard.check_before_window("job_creation", 4000, is_admin=True)
    clock.now = T0 + 3000 + 1  # inside the 10 min drain period: no new blocked work
    guard.refresh()
    with pytest.raises(MaintenanceUpcoming, match="new work of this kind has stopped"):
        guard.check_before_window("job_creation", None)


def test_progress_updates_belong_to_the_maintenance_under_way(
    guards: list[MaintenanceGuard], clock: Clock
) -> None:
    guard = guards[0]
    with pytest.raises(InvalidInput, match="maintenance is off"):
        guard.post_update("nothing to say")
    guard.enable("normal", reason="migration", by="alice")
    guard.post_update("Migration 60% done", by="alice")
    clock.now += 60
    guard.post_update("<b>80%</b>", by="bob")
    guard.enable("normal", reason="migration, longer", by="alice")  # an update keeps them
    updates = guard.status().to_dict(clock.now)["updates"]
    assert [u["text"] for u in updates] == ["Migration 60% done", "<b>80%</b>"]
    assert "by" not in updates[0]
    guard.disable(by="alice")
    assert guard.status().updates == ()
    guard.enable("normal", reason="next", by="alice")
    assert guard.status().updates == ()  # a new maintenance starts a new timeline
