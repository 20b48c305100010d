"""The shared-memory feed a forked child follows (maintenance_guard.feed)."""

from __future__ import annotations

import os
import time
from dataclasses import replace

from maintenance_guard.feed import StateFeed
from maintenance_guard.modes import MaintenanceMode
from maintenance_guard.status import INACTIVE


def test_a_written_state_reads_back_whole() -> None:
    feed = StateFeed()
    status = replace(
        INACTIVE,
        mode=MaintenanceMode.NORMAL,
        reason="migration <b>",
        version=7,
        generation="abc",
        blocked_operations=("data_import",),
        started_at=1_700_000_000.25,
    )
    assert feed.sequence() == 0
    feed.publish(status)
    seq, read = feed.read()
    assert seq == 2 and read == status
    assert (read.version, read.generation) == (7, "abc")


def test_a_state_too_big_for_the_feed_reads_as_none() -> None:
    feed = StateFeed(size=64)
    feed.publish(replace(INACTIVE, reason="x" * 500, version=1, generation="g"))
    assert feed.read() == (2, None)  # the follower then reads the store


def test_beat_and_offset_are_shared_with_a_forked_child() -> None:
    feed = StateFeed()
    feed.beat(0.125)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = not feed.owned and feed.offset() == 0.125 and feed.last_beat() > 0
        os.write(write_end, b"1" if ok else b"0")
        os._exit(0)
    os.close(write_end)
    assert os.read(read_end, 1) == b"1"
    os.waitpid(pid, 0)
    assert feed.owned and feed.last_beat() <= time.monotonic()


def test_nothing_is_written_per_change_until_the_process_forks() -> None:
    feed = StateFeed()
    assert not feed.forked
    feed.before_fork(replace(INACTIVE, version=3, generation="g"))
    assert feed.forked and feed.read()[1] is not None
