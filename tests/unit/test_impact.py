"""The per-window impact math, without servers: window ids, tallies and their buffer,
the chart series and sparkline, and windows kept apart on a `MemoryStore`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from maintenance_guard import (
    InvalidInput,
    MaintenanceActive,
    MaintenanceGuard,
    MemoryStore,
    read_impact,
)
from maintenance_guard.events import AttemptRecorder
from maintenance_guard.impact import WindowImpact, attempt_series, sparkline_points
from maintenance_guard.modes import MaintenanceMode
from maintenance_guard.status import MaintenanceStatus
from maintenance_guard.tally import StoredWindow, WindowTally, window_of


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guard(clock: Clock) -> Iterator[MaintenanceGuard]:
    made = MaintenanceGuard(MemoryStore(clock), clock=clock)
    yield made
    made.stop(timeout=1)


def refuse(guard: MaintenanceGuard, user: str | None, surface: str = "http") -> None:
    with pytest.raises(MaintenanceActive):
        guard.check("job_creation", surface=surface, user=user)


def test_window_id_is_the_opening_time_and_falls_back_to_started_at() -> None:
    on = MaintenanceStatus(mode=MaintenanceMode.NORMAL, started_at=20.5, opened_at=10.25)
    assert window_of(on) == "10.250000"
    assert window_of(MaintenanceStatus(mode=MaintenanceMode.TEST, started_at=20.5)) == "20.500000"
    assert window_of(MaintenanceStatus(started_at=20.5, opened_at=10.25)) is None  # off


def test_attempt_series_fills_gaps_with_zeros_and_sums_long_windows_into_steps() -> None:
    assert attempt_series({100: 2, 103: 1}, 100, 104) == (1, [2, 0, 0, 1, 0])
    assert attempt_series({}, 5, 5) == (1, [0])
    assert attempt_series({99: 7, 106: 1}, 100, 105) == (1, [0] * 6)  # outside: ignored
    step, counts = attempt_series({0: 1, 599: 2, 600: 4}, 0, 600, points=120)
    assert step == 6 and len(counts) == 101 and sum(counts) == 7 and counts[-1] == 4


def test_sparkline_spans_the_box_with_the_peak_at_the_top() -> None:
    assert sparkline_points([0, 2, 1], width=240, height=40) == "0,40 120,0 240,20"
    assert sparkline_points([0, 0]) == "0,40 240,40"  # nothing refused: a flat baseline
    assert sparkline_points([3]) == "0,0 240,0"  # one point: a level line
    assert sparkline_points([]) == ""


def test_impact_from_stored_counts_sorts_kinds_users_jobs_and_test_counts() -> None:
    stored = StoredWindow(
        window="600.000000",
        counts={
            "blocked:http:job_creation": 3,
            "blocked:publish:caption_generation": 1,
            "unnamed:publish:caption_generation": 1,
            "finished:worker:read": 4,
            "finished:worker:-": 1,
            "would_block_normal:http:job_creation": 5,
            "would_block:http:job_creation": 9,
        },
        minutes={10: 3, 12: 1},
        distinct_users=2,
        meta={"opened_at": "600.0", "ended_at": "790.0", "mode:normal": "1", "reason": "db"},
    )
    impact = WindowImpact.from_stored(stored, current=None, now=10_000.0)
    assert impact.refused == {"job_creation": {"http": 3}, "caption_generation": {"publish": 1}}
    assert impact.refused_total == 4 and impact.refused_without_user == 1
    assert impact.would_refuse == {"normal": {"job_creation": {"http": 5}}}
    assert impact.jobs_finished == {"read": 4, "-": 1} and impact.jobs_finished_total == 5
    assert (impact.active, impact.ended_at, impact.modes) == (False, 790.0, ("normal",))
    # The chart runs from the opening minute to the end, not to the time of the read.
    assert impact.chart() == (600.0, 1, [3, 0, 1, 0])
    data = impact.to_dict()
    assert data["attempts_per_minute"] == {
        "start": "1970-01-01T00:10:00Z",
        "step_minutes": 1,
        "counts": [3, 0, 1, 0],
    }
    assert data["distinct_users_approximate"] is True and data["sessions"] is None
    assert "Refused attempts: 4" in impact.to_text()
    assert "Active sessions: unknown" in impact.to_text()
    assert WindowImpact.from_stored(stored, current="600.000000", now=720.0).active


def test_refusals_tally_per_window_with_users_minutes_and_unnamed_ones() -> None:
    recorder = AttemptRecorder()
    recorder.count("http", "job_creation", window="1.000000", user="alice", minute=7)
    recorder.count("http", "job_creation", window="1.000000", user="alice", minute=7)
    recorder.count("publish", "job_creation", window="1.000000", user=None, minute=8)
    recorder.count("http", "job_creation")  # no window: the all-time counter only
    counts, _ = recorder.take()
    assert counts == {"blocked:http:job_creation": 3, "blocked:publish:job_creation": 1}
    tally = recorder.take_tallies()["1.000000"]
    assert tally.counts == {
        "blocked:http:job_creation": 2,
        "blocked:publish:job_creation": 1,
        "unnamed:publish:job_creation": 1,
    }
    assert tally.users == {"alice"} and tally.minutes == {7: 2, 8: 1}


def test_a_window_description_waits_for_counts_unless_forced_or_put_back_eagerly() -> None:
    recorder = AttemptRecorder()
    recorder.note_window("1.000000", {"reason": "db"})
    assert recorder.take_tallies() == {}  # a description alone: no write of its own
    assert recorder.take_tallies(force=True)["1.000000"].meta == {"reason": "db"}
    recorder.note_window("1.000000", {"ended_at": "9.0"})
    failed = recorder.take_tallies(force=True)
    recorder.note_window("1.000000", {"reason": "newer"})
    recorder.put_back_tallies(failed, eager=True)  # the forced write failed: retried
    again = recorder.take_tallies()["1.000000"]
    assert again.meta == {"ended_at": "9.0", "reason": "newer"} and again.eager


def test_a_tally_buffers_a_bounded_number_of_user_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("maintenance_guard.tally.MAX_BUFFERED_USERS", 2)
    tally = WindowTally()
    for user in ("a", "b", "c", "a"):
        tally.refused("blocked:http:job_creation", user, None)
    assert tally.users == {"a", "b"}
    assert tally.counts["unnamed:http:job_creation"] == 1  # "c": counted, not named


def test_windows_are_kept_apart_and_updates_or_mode_changes_keep_the_window(
    guard: MaintenanceGuard, clock: Clock
) -> None:
    assert guard.impact() is None
    guard.enable("normal", reason="first", by="ops")
    first = guard.current().opened_at
    refuse(guard, "alice")
    refuse(guard, "bob")
    clock.now += 120
    refuse(guard, None, surface="python")
    guard.note_job_finished("read")
    guard.enable("emergency", reason="worse", by="ops")  # same window
    assert guard.current().opened_at == first
    refuse(guard, "alice")
    clock.now += 60
    guard.disable(by="ops")
    ended = guard.impact()
    assert ended is not None and not ended.active and ended.ended_at == clock.now
    assert ended.refused == {"job_creation": {"http": 3, "python": 1}}
    assert ended.distinct_users == 2 and ended.refused_without_user == 1
    assert ended.chart() == (first // 60 * 60, 1, [2, 0, 2, 0])  # type: ignore[operator]
    assert ended.jobs_finished == {"read": 1} and ended.modes == ("emergency", "normal")

    clock.now += 600
    guard.note_job_finished("read")  # maintenance is off: no window to count it in
    guard.enable("normal", reason="second", by="ops")
    second = guard.impact()
    assert second is not None and second.active and second.window != ended.window
    assert (second.refused_total, second.distinct_users, second.jobs_finished) == (0, 0, {})
    refuse(guard, "carol")
    assert guard.impact().distinct_users == 1  # type: ignore[union-attr]
    kept = read_impact(guard.store, ended.window)
    assert kept is not None and kept.refused_total == 4 and kept.jobs_finished_total == 1
    with pytest.raises(InvalidInput):
        read_impact(guard.store, "not-a-window")
    assert read_impact(guard.store, "12345.000000") is None


def test_a_test_mode_window_counts_what_each_mode_would_refuse(guard: MaintenanceGuard) -> None:
    guard.enable("test", reason="rehearsal", by="ops")
    guard.check("job_creation", surface="http", user="alice")  # recorded, not refused
    guard.check("read", surface="http", user="bob")  # only emergency would refuse it
    impact = guard.impact()
    assert impact is not None and impact.refused == {} and impact.modes == ("test",)
    assert impact.would_refuse == {
        "normal": {"job_creation": {"http": 1}},
        "emergency": {"job_creation": {"http": 1}, "read": {"http": 1}},
    }
    assert impact.distinct_users == 1  # alice: normal mode would have refused her
