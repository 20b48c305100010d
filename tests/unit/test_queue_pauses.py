"""Queue pauses in the core: input checks, the state they live in, enable/disable keeping
them, and the timed end (once, by the store's clock) on a MemoryStore."""

from __future__ import annotations

import pytest

from maintenance_guard import GuardSettings, InvalidInput, MaintenanceGuard, MemoryStore
from maintenance_guard.changes import Pausing, Resuming
from maintenance_guard.pauses import QueuePause, paused_queue_names
from maintenance_guard.status import MaintenanceStatus
from tests.helpers import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        (None, "name at least one queue"),
        ([], "name at least one queue"),
        ("reports", "must be a list"),
        (["bad name"], "invalid queue name"),
        (["*"], "invalid queue name"),
        ([""], "invalid queue name"),
        ([f"q{i}" for i in range(101)], "at most 100"),
    ],
)
def test_bad_pause_requests_are_refused_with_a_clear_message(queues: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Pausing.parse(queues, reason="migration")


def test_a_pause_needs_a_reason_and_a_sane_duration() -> None:
    with pytest.raises(InvalidInput, match="reason"):
        Pausing.parse(["reports"], reason="  ")
    with pytest.raises(InvalidInput, match="duration"):
        Pausing.parse(["reports"], reason="x", duration="soon")
    with pytest.raises(InvalidInput, match="worker name"):
        Pausing.parse(["reports"], reason="x", workers=["a b"])


def test_resume_needs_queues_or_all_not_both() -> None:
    with pytest.raises(InvalidInput, match="--all"):
        Resuming.parse()
    with pytest.raises(InvalidInput, match="not both"):
        Resuming.parse(["a"], everything=True)


def test_pauses_round_trip_through_the_stored_fields_and_json() -> None:
    pause = QueuePause("reports", "reindex", "alice", 100.0, 160.0, ("w1@h",), True)
    status = MaintenanceStatus(paused_queues=(pause,))
    decoded = MaintenanceStatus.from_fields(status.to_fields())
    assert decoded.paused_queues == (pause,)
    public = status.to_dict(now=120.0)["paused_queues"]
    assert public == [{"queue": "reports", "until": "1970-01-01T00:02:40Z", "beat": True}]
    admin = status.to_dict(now=120.0, include_admin=True)["paused_queues"][0]
    assert admin["by"] == "alice" and admin["workers"] == ["w1@h"]
    assert status.to_dict(now=160.0)["paused_queues"] == []  # ended: not listed


def test_a_pause_scoped_to_workers_applies_only_to_them() -> None:
    everyone = QueuePause("a", "r", "x", 0.0)
    some = QueuePause("b", "r", "x", 0.0, workers=("w1@h",))
    ended = QueuePause("c", "r", "x", 0.0, ends_at=5.0)
    assert paused_queue_names([everyone, some, ended], "w1@h", 10.0) == {"a", "b"}
    assert paused_queue_names([everyone, some, ended], "w2@h", 10.0) == {"a"}
    assert paused_queue_names([everyone, some, ended], "w2@h", 4.0) == {"a", "c"}


def test_pause_resume_and_maintenance_changes_keep_each_other() -> None:
    store = MemoryStore()
    guard = MaintenanceGuard(store)
    other = MaintenanceGuard(store)
    try:
        result = guard.pause_queues(["reports", "exports"], reason="reindex", by="alice")
        assert [p.queue for p in result.pauses] == ["reports", "exports"]
        assert result.unknown_queues is None  # a MemoryStore keeps no worker registry
        guard.enable("normal", reason="deploy", by="bob")
        guard.disable(by="bob")
        assert [p.queue for p in other.paused_queues()] == ["reports", "exports"]
        assert guard.resume_queues(["reports"], by="alice") == ("reports",)
        assert guard.resume_queues(["reports"], by="alice") == ()  # not paused: no change
        assert [p.queue for p in guard.paused_queues()] == ["exports"]
        assert guard.current().mode is None
        assert guard.resume_queues(everything=True) == ("exports",)
        types = [e.type for e in guard.events()]
        assert types == [
            "queues_resumed",
            "queues_resumed",
            "disabled",
            "enabled",
            "queues_paused",
        ]
    finally:
        guard.stop(timeout=2)
        other.stop(timeout=2)


def test_pausing_a_paused_queue_again_replaces_its_scope_and_end() -> None:
    guard = MaintenanceGuard(MemoryStore())
    guard.pause_queues(["reports"], reason="one", duration="1h", workers=["w1@h"])
    guard.pause_queues(["reports"], reason="two")
    (pause,) = guard.paused_queues()
    assert (pause.reason, pause.ends_at, pause.workers) == ("two", None, ())


def test_a_timed_pause_ends_once_by_the_store_clock_across_processes() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    settings = GuardSettings(poll_interval=0.05)
    guards = [MaintenanceGuard(store, settings, clock=clock) for _ in range(4)]
    try:
        for g in guards:
            g.start()
        guards[0].pause_queues(["reports"], reason="reindex", duration=60, beat=True)
        assert guards[0].paused_queues()
        clock.now += 59
        for g in guards:
            g.refresh()
        assert all(g.paused_queues() for g in guards)
        clock.now += 2
        # Every process stops counting it at once, before anyone removed it ...
        assert not any(g.current().pauses(g.now()) for g in guards)
        # ... and exactly one process removes it, with one audit event.
        wait_for(lambda: not store.load_state().paused_queues, 5)  # type: ignore[union-attr]
        wait_for(lambda: all(not g.current().paused_queues for g in guards), 5)
        ended = [e for e in guards[0].events() if e.type == "pause_ended"]
        assert len(ended) == 1 and ended[0].fields["queues"] == '["reports"]'
    finally:
        for g in guards:
            g.stop(timeout=2)
