"""Clocks and histories: a process whose clock is off, and a Redis that restarts empty
while a process sleeps through it.

Every process corrects its clock by Redis' own (measured at each poll), and the auto-end
write is refused by the store's script until Redis' clock has reached the end. A store
that restarts empty starts a new history (generation), so versions that begin again at 1
are never mistaken for the old ones.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from maintenance_guard import MaintenanceGuard
from maintenance_guard.windows import iso_z
from tests.conftest import RedisServer
from tests.helpers import wait_for
from tests.reliability.conftest import Proc, actor

POLL = 0.1


def _seen(proc: Proc) -> list[tuple[int, str, bool, float]]:
    """(version, mode, blocked, real time) of every ``seen`` line so far."""
    out = []
    for line in proc.all_lines:
        if line.startswith("seen "):
            _, version, mode, blocked, at = line.split()
            out.append((int(version), mode, blocked == "True", float(at)))
    return out


def test_a_process_whose_clock_runs_20s_ahead_neither_ends_nor_lifts_maintenance_early(
    redis_url: str,
    key_prefix: str,
    make_guard: Callable[..., MaintenanceGuard],
    spawn: Callable[..., Proc],
) -> None:
    skews = [0.0, 0.0, 0.0, 20.0]  # the last process's clock is 20 s ahead
    procs = [spawn(*actor("watch", redis_url, key_prefix, POLL, skew)) for skew in skews]
    for p in procs:
        p.expect("ready")
    admin = make_guard()
    # Give the skewed process a few polls to measure its offset (it does at its first).
    wait_for(lambda: len(admin.store.read_presence()) >= len(procs), timeout=10)  # type: ignore[attr-defined]
    # On one machine the clocks agree: no process corrects its clock by the noise of a
    # reading (that would move publish stamps across `enable`).
    admin.start()
    wait_for(lambda: len(admin.store.read_presence()) > len(procs), timeout=10)  # type: ignore[attr-defined]
    assert abs(admin.now() - time.time()) < 0.001
    enabled = admin.enable("normal", reason="short window", duration=4, auto_end=True, by="ops")
    end = enabled.estimated_completion
    assert end is not None
    for p in procs:
        p.expect(f"seen {enabled.version + 1} None False", timeout=20)

    ended = admin.events(limit=1)[0]
    assert ended.type == "auto_ended"
    assert ended.at >= end, (ended.at, end)  # written on Redis' clock, not before the end
    for p, skew in zip(procs, skews, strict=True):
        lifted = [at for version, _, blocked, at in _seen(p) if not blocked]
        # Lifted locally no earlier than the end (a poll's clock measurement is within a
        # few ms of Redis' clock on loopback); without the correction the skewed process
        # would have let work through 20 s early.
        assert lifted and min(lifted) >= end - 0.05, (skew, min(lifted), end)


def test_a_process_paused_through_an_empty_restart_follows_the_new_history(
    private_redis: RedisServer,
    key_prefix: str,
    make_guard: Callable[..., MaintenanceGuard],
    spawn: Callable[..., Proc],
) -> None:
    admin = make_guard(url=private_redis.url)
    admin.enable("normal", reason="first", by="ops")
    off = admin.disable(by="ops")  # version 2 of the first history
    sleeper = spawn(*actor("watch", private_redis.url, key_prefix, POLL))
    sleeper.expect(f"ready {off.version}")
    os.killpg(sleeper.proc.pid, signal.SIGSTOP)
    try:
        private_redis.stop()
        private_redis.start()  # back, empty: versions start again at 1
        fresh = make_guard(url=private_redis.url)
        fresh.enable("emergency", reason="after the restart", by="ops")
        again = fresh.enable("emergency", reason="after the restart, updated", by="ops")
        assert again.version == off.version  # same number, another history
        assert again.generation != off.generation
    finally:
        os.killpg(sleeper.proc.pid, signal.SIGCONT)
    # Within a few polls the sleeper sees emergency; it never keeps "off, version 2".
    sleeper.expect(f"seen {again.version} emergency True", timeout=5)


def test_a_scheduled_window_starts_once_and_never_early_across_processes_one_20s_ahead(
    redis_url: str,
    key_prefix: str,
    make_guard: Callable[..., MaintenanceGuard],
    spawn: Callable[..., Proc],
) -> None:
    skews = [0.0, 0.0, 0.0, 20.0]
    procs = [spawn(*actor("watch", redis_url, key_prefix, POLL, skew)) for skew in skews]
    for p in procs:
        p.expect("ready")
    admin = make_guard()
    wait_for(lambda: len(admin.store.read_presence()) >= len(procs), timeout=10)  # type: ignore[attr-defined]
    start = time.time() + 2.0
    window = admin.windows.add(iso_z(start), 2, reason="scheduled", auto_end=True, by="ops")
    assert window.start_at == float(int(start))  # ISO text has whole seconds
    for p in procs:
        p.expect("seen", timeout=10)  # the window itself is a state change
    deadline = time.time() + 15
    while time.time() < deadline:
        if [e for e in admin.events(limit=20) if e.type == "auto_ended"]:
            break
        time.sleep(0.1)
    events = admin.events(limit=20)
    started = [e for e in events if e.fields.get("window") == window.id and e.type == "enabled"]
    assert len(started) == 1, [(e.type, e.fields) for e in events]
    assert started[0].at >= window.start_at  # Redis' clock decided
    assert len([e for e in events if e.type == "auto_ended"]) == 1
    for p, skew in zip(procs, skews, strict=True):
        blocked = [at for _, mode, is_blocked, at in _seen(p) if is_blocked]
        # No process refused work before the window opened, the one 20 s ahead included.
        assert blocked and min(blocked) >= window.start_at - 0.05, (skew, blocked, start)
