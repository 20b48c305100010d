"""The in-flight writer (`InflightTracker`) on a registry that records its writes (the
real registry on a real Redis is in tests/integration/test_celery_inflight.py): a lone
start is written at once, the starts and ends that follow within the write gap are
gathered into one round trip, a job that starts and ends between two writes is never
written, a running one is, and `flush` does not wait out the gap."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import cast

from maintenance_guard.errors import StoreUnavailable
from maintenance_guard.inflight import InflightJob, InflightRegistry
from maintenance_guard.tracking import InflightTracker
from tests.helpers import wait_for


class RecordedWrites:
    """Stands in for `InflightRegistry.write`: each call is one round trip."""

    def __init__(self, fail: int = 0) -> None:
        self.calls: list[tuple[list[str], list[str], list[str]]] = []
        self.lost: list[str] = []
        self.fail = fail
        self.lock = threading.Lock()

    def write(
        self,
        started: Iterable[InflightJob],
        finished: Iterable[str],
        alive: Iterable[str],
        now: float | None = None,
    ) -> None:
        with self.lock:
            if self.fail:
                self.fail -= 1
                raise StoreUnavailable("down")
            self.calls.append(([j.id for j in started], sorted(finished), sorted(alive)))

    def lose(self, jobs: Iterable[InflightJob], now: float | None = None) -> None:
        jobs = list(jobs)
        if not jobs:
            return
        with self.lock:
            if self.fail:
                self.fail -= 1
                raise StoreUnavailable("down")
            self.lost.extend(j.id for j in jobs)

    def changes(self) -> list[tuple[list[str], list[str]]]:
        with self.lock:
            return [(s, f) for s, f, _ in self.calls if s or f]

    def recorded(self) -> set[str]:
        """Ids written as started and not (yet) as finished."""
        out: set[str] = set()
        for started, finished in self.changes():
            out |= set(started)
            out -= set(finished)
        return out


def tracker(writes: RecordedWrites, gap: float, interval: float = 60.0) -> InflightTracker:
    return InflightTracker(cast(InflightRegistry, writes), interval=interval, gap=gap)


def job(n: int) -> InflightJob:
    return InflightJob(f"job-{n}", "t", None, "w", 1, 0.0)


def run_short_jobs(t: InflightTracker, count: int, first: int = 0) -> None:
    for n in range(first, first + count):
        t.started(job(n))
        time.sleep(0.001)  # the task body: lets the writer thread run, as a pool process does
        t.finished(f"job-{n}")


def test_a_lone_start_and_its_end_are_written_at_once_whatever_the_gap() -> None:
    writes = RecordedWrites()
    t = tracker(writes, gap=60.0)
    t.started(job(1))
    wait_for(lambda: writes.recorded() == {"job-1"}, timeout=5)
    t.finished("job-1")  # within the gap: gathered until the flush
    time.sleep(0.05)
    assert writes.recorded() == {"job-1"}
    assert t.flush(5.0)
    assert writes.changes() == [(["job-1"], []), ([], ["job-1"])]


def test_a_burst_of_short_jobs_within_the_gap_costs_one_round_trip_after_the_first() -> None:
    writes = RecordedWrites()
    t = tracker(writes, gap=60.0)
    t.started(job(0))
    wait_for(lambda: writes.recorded() == {"job-0"}, timeout=5)  # at once: the first
    t.finished("job-0")
    run_short_jobs(t, 50, first=1)
    t.started(job(999))  # still running at the flush
    assert t.flush(5.0)
    # Without the gap the writer sent about one round trip per job.
    assert writes.changes() == [(["job-0"], []), (["job-999"], ["job-0"])]
    assert t.writes == 2


def test_a_job_that_keeps_running_after_a_stream_is_written_within_the_gap() -> None:
    writes = RecordedWrites()
    t = tracker(writes, gap=0.02)
    run_short_jobs(t, 100)
    t.started(job(999))
    wait_for(lambda: writes.recorded() == {"job-999"}, timeout=5)
    t.finished("job-999")
    wait_for(lambda: writes.recorded() == set() and t.flush(0), timeout=5)


def test_many_short_jobs_cost_far_fewer_round_trips_than_two_per_job() -> None:
    writes = RecordedWrites()
    t = tracker(writes, gap=0.02)
    run_short_jobs(t, 200)
    assert t.flush(5.0)
    assert writes.recorded() == set()
    # Each round trip gathers what a gap's span brought (about ten 1 ms jobs on a quiet
    # machine; about 200 round trips without the gap, one per job), fewer than one a
    # job even when a busy machine stretches the jobs.
    assert len(writes.changes()) < 100


def test_flush_writes_at_once_instead_of_waiting_out_the_gap() -> None:
    writes = RecordedWrites()
    t = tracker(writes, gap=60.0)
    t.started(job(1))
    wait_for(lambda: writes.recorded() == {"job-1"}, timeout=5)
    t.started(job(2))  # within the gap
    assert t.flush(5.0)
    assert writes.recorded() == {"job-1", "job-2"}


def test_changes_kept_through_a_failed_write_are_written_once_the_store_answers() -> None:
    writes = RecordedWrites(fail=2)
    t = tracker(writes, gap=0.0)
    t.started(job(1))
    t.started(job(2))
    wait_for(lambda: writes.recorded() == {"job-1", "job-2"}, timeout=10)
    t.finished("job-1")
    assert t.flush(5.0)
    assert writes.recorded() == {"job-2"}
    assert t.failures == 2


def test_an_end_that_failed_to_be_written_is_written_even_if_the_id_runs_again() -> None:
    # The failed write may have landed or not: the earlier run's record must go either way.
    writes = RecordedWrites()
    t = tracker(writes, gap=60.0)
    t.started(job(1))
    wait_for(lambda: writes.recorded() == {"job-1"}, timeout=5)
    writes.fail = 1
    t.finished("job-1")
    t.flush(0.5)  # the write fails
    t.started(job(1))
    t.finished("job-1")
    assert t.flush(5.0)
    assert writes.recorded() == set()


def test_heartbeats_push_the_written_running_jobs_only() -> None:
    writes = RecordedWrites()
    t = tracker(writes, gap=0.0, interval=0.05)
    t.started(job(1))
    assert t.flush(5.0)
    wait_for(lambda: any(alive == ["job-1"] for _s, _f, alive in writes.calls), timeout=5)


def test_a_job_run_again_under_its_id_before_its_end_is_written_leaves_no_record() -> None:
    # A retry with countdown 0 keeps the task id and may start in the same process.
    writes = RecordedWrites()
    t = tracker(writes, gap=60.0)
    t.started(job(1))
    wait_for(lambda: writes.recorded() == {"job-1"}, timeout=5)
    t.finished("job-1")
    t.started(job(1))  # the retry, before the first run's end was written
    t.finished("job-1")
    assert t.flush(5.0)
    assert writes.recorded() == set()


def test_a_job_run_again_under_its_id_that_keeps_running_stays_recorded() -> None:
    writes = RecordedWrites()
    t = tracker(writes, gap=60.0)
    t.started(job(1))
    wait_for(lambda: writes.recorded() == {"job-1"}, timeout=5)
    t.finished("job-1")
    t.started(job(1))
    assert t.flush(5.0)
    assert writes.recorded() == {"job-1"}


def test_a_job_lost_before_its_start_was_written_is_recorded_lost_and_never_started() -> None:
    writes = RecordedWrites()
    t = tracker(writes, gap=60.0)
    t.started(job(0))
    wait_for(lambda: writes.recorded() == {"job-0"}, timeout=5)
    t.started(job(1))  # within the gap: not written yet
    t.lost(job(1))  # its pool process died under it
    assert t.flush(5.0)
    assert writes.lost == ["job-1"]
    assert writes.recorded() == {"job-0"}


def test_a_lost_job_whose_write_fails_is_recorded_once_the_store_answers() -> None:
    writes = RecordedWrites()
    t = tracker(writes, gap=0.0)
    writes.fail = 1
    t.lost(job(1))
    wait_for(lambda: writes.lost == ["job-1"], timeout=10)
    assert t.failures == 1
