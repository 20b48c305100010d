"""The shared state on a real Redis: round trip, propagation, repair, concurrency, bad input."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import redis

from maintenance_guard import (
    InvalidInput,
    MaintenanceActive,
    MaintenanceGuard,
    MaintenanceMode,
    MaintenanceStatus,
    UnknownOperation,
)
from tests.conftest import ROOT
from tests.helpers import wait_for


class Observer:
    """A second OS process running a guard, reporting every version it sees."""

    def __init__(self, url: str, prefix: str, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.observer", url, prefix, *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self.next_line(20)
        assert ready.startswith("ready"), ready

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def next_line(self, timeout: float) -> str:
        return self.lines.get(timeout=timeout)

    def wait_for_version(self, version: int, timeout: float) -> str:
        while True:
            line = self.next_line(timeout)
            if line.startswith(f"seen {version} "):
                return line

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def observer_factory(redis_url: str, key_prefix: str) -> Iterator[Callable[..., Observer]]:
    made: list[Observer] = []

    def make(*extra: str) -> Observer:
        obs = Observer(redis_url, key_prefix, *extra)
        made.append(obs)
        return obs

    yield make
    for obs in made:
        obs.stop()


def test_state_round_trip_through_redis(
    guard: MaintenanceGuard, make_guard: Callable[..., MaintenanceGuard]
) -> None:
    guard.enable("normal", reason="DB upgrade", duration="1h", by="alice")
    fresh = make_guard()
    status = fresh.status()
    assert status.mode is MaintenanceMode.NORMAL
    assert status.reason == "DB upgrade"
    assert status.estimated_duration == 3600
    assert status.enabled_by == "alice"
    assert fresh.is_blocked("caption_generation")
    assert not fresh.is_blocked("read")
    assert not fresh.is_blocked("caption_generation", is_admin=True)
    guard.disable(by="alice")
    assert not make_guard().status().is_active


def test_check_raises_maintenance_active_with_operation_message_and_retry_after(
    guard: MaintenanceGuard,
) -> None:
    guard.enable("normal", reason="DB upgrade", duration=600, by="alice")
    with pytest.raises(MaintenanceActive) as info:
        guard.check("caption_generation")
    refused = info.value
    assert refused.operation == "caption_generation"
    assert refused.mode == "normal"
    assert refused.message.startswith("Caption generation is temporarily unavailable")
    assert 590 <= refused.retry_after <= 600
    assert refused.status.reason == "DB upgrade"
    guard.check("read")  # reads stay open
    guard.check("caption_generation", is_admin=True)


def test_unknown_operation_is_an_error_not_a_silent_allow(guard: MaintenanceGuard) -> None:
    with pytest.raises(UnknownOperation):
        guard.is_blocked("caption_generatoin")
    guard.enable("normal", reason="x")
    with pytest.raises(UnknownOperation):
        guard.check("nope")


def test_every_change_bumps_the_version_and_is_in_the_audit_log(guard: MaintenanceGuard) -> None:
    v1 = guard.enable("normal", reason="one", by="alice").version
    v2 = guard.enable("emergency", reason="two", by="bob").version
    v3 = guard.disable(by="carol").version
    assert v1 < v2 < v3
    # state changes carry a version; leaving an emergency also logs its checks (no version)
    types = [(e.type, e.actor) for e in guard.events() if "version" in e.fields]
    assert types == [("disabled", "carol"), ("mode_changed", "bob"), ("enabled", "alice")]
    assert [int(e.fields["version"]) for e in guard.events() if "version" in e.fields] == [
        v3,
        v2,
        v1,
    ]


def test_disable_when_off_changes_nothing(guard: MaintenanceGuard) -> None:
    before = guard.status().version
    guard.disable(by="alice")
    assert guard.status().version == before
    assert guard.events() == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "maintenance", "reason": "x"},
        {"mode": "normal", "reason": ""},
        {"mode": "normal", "reason": "x" * 501},
        {"mode": "normal", "reason": "x" * 10_000_000},
        {"mode": "normal", "reason": "x", "duration": -1},
        {"mode": "normal", "reason": "x", "duration": 0},
        {"mode": "normal", "reason": "x", "duration": 10**8},
        {"mode": "normal", "reason": "x", "duration": "soon"},
        {"mode": "normal", "reason": "x", "auto_end": True},
        {"mode": "normal", "reason": "x", "operations": ["nope"]},
        {"mode": "normal", "reason": "x", "operations": []},
        {"mode": "emergency", "reason": "x", "operations": ["job_creation"]},
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    guard: MaintenanceGuard, redis_client: redis.Redis, kwargs: dict[str, object]
) -> None:
    guard.enable("test", reason="before")
    snapshot = redis_client.hgetall(guard.store.state_key)  # type: ignore[attr-defined]
    events = len(guard.events())
    with pytest.raises(InvalidInput):
        guard.enable(**kwargs)  # type: ignore[arg-type]
    assert redis_client.hgetall(guard.store.state_key) == snapshot  # type: ignore[attr-defined]
    assert len(guard.events()) == events


def test_narrowed_operations_block_only_those(guard: MaintenanceGuard) -> None:
    guard.enable("normal", reason="images only", operations=["image_processing"])
    assert guard.is_blocked("image_processing")
    assert not guard.is_blocked("caption_generation")
    assert guard.status().blocked_operations == ("image_processing",)


def test_change_in_one_process_is_seen_by_another_process(
    guard: MaintenanceGuard, observer_factory: Callable[..., Observer]
) -> None:
    obs = observer_factory("5.0")  # slow poll: only pub/sub can deliver quickly
    status = guard.enable("normal", reason="propagate")
    line = obs.wait_for_version(status.version, timeout=4)
    assert line.endswith("normal True")
    status = guard.disable()
    assert obs.wait_for_version(status.version, timeout=4).endswith("None False")


def test_missed_notification_is_repaired_by_the_version_poll(
    guard: MaintenanceGuard, observer_factory: Callable[..., Observer]
) -> None:
    obs = observer_factory("0.3", "--no-pubsub")  # every notification is lost
    status = guard.enable("normal", reason="no pubsub")
    assert obs.wait_for_version(status.version, timeout=5).endswith("normal True")


def test_pubsub_connection_killed_later_changes_still_arrive(
    guard: MaintenanceGuard, make_guard: Callable[..., MaintenanceGuard], redis_client: redis.Redis
) -> None:
    watcher = make_guard(poll_interval=0.3)
    watcher.start()
    wait_for(lambda: redis_client.pubsub_numsub(watcher.store.channel)[0][1] >= 1)  # type: ignore[attr-defined]
    redis_client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    status = guard.enable("normal", reason="after kill")
    wait_for(lambda: watcher.current().version == status.version, timeout=5)
    assert watcher.is_blocked("job_creation")


def test_concurrent_admins_end_with_one_consistent_state_and_every_change_logged(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    guards = [make_guard() for _ in range(4)]

    def switch(i: int) -> int:
        g = guards[i % len(guards)]
        if i % 3 == 2:
            return g.disable(by=f"admin{i}").version
        mode = "emergency" if i % 3 == 1 else "normal"
        return g.enable(mode, reason=f"change {i}", by=f"admin{i}").version

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(switch, range(40)))
    final = make_guard().status()
    events = [e for e in guards[0].events(limit=1000) if "version" in e.fields]
    versions = [int(e.fields["version"]) for e in events]
    assert versions == sorted(versions, reverse=True)
    assert len(set(versions)) == len(versions)
    assert versions[0] == final.version
    # every write is a logged event; the newest event describes the final state
    newest = events[0]
    if final.is_active:
        assert newest.fields["mode"] == final.mode.value  # type: ignore[union-attr]
        assert newest.reason == final.reason
    else:
        assert newest.type == "disabled"


def test_auto_end_ends_maintenance_at_the_end_time_and_logs_it(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    # End times are decided by Redis' clock (a process's own clock cannot end it early,
    # see test_clock_skew.py), so this waits a real second rather than faking time.
    g = make_guard()
    started = g.enable("normal", reason="short", duration=1, auto_end=True, by="alice")
    end = started.estimated_completion
    assert end is not None and g.is_blocked("job_creation")
    wait_for(lambda: not g.is_blocked("job_creation"), timeout=5)
    assert g.now() >= end  # expired reads as inactive at once, never before the end
    wait_for(lambda: g.store.load_state().mode is None, timeout=5)  # type: ignore[union-attr]
    assert g.events()[0].type == "auto_ended"


def test_without_auto_end_maintenance_stays_on_and_reports_overrun(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    g = make_guard()
    g.enable("normal", reason="long", duration=1)
    wait_for(lambda: g.status().overrunning(g.now()), timeout=5)
    assert g.is_blocked("job_creation")
    status = g.status()
    assert status.overrunning(g.now())
    assert status.to_dict(g.now())["overrunning"] is True


def test_listeners_end_on_the_state_in_force_when_two_threads_install_at_once(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    """One thread installs an emergency while another (an admin call, the watcher)
    installs the disable that follows it; the first is slow to tell its listeners. A
    worker acting on the listeners' last word must not stay paused by the stale emergency."""
    admin = make_guard()
    watched = make_guard()
    emergency = admin.enable("emergency", reason="race", by="test")
    off = admin.disable(by="test")
    seen: list[int] = []
    armed = threading.Event()
    first_call = threading.Event()
    release = threading.Event()

    def slow_to_record(status: MaintenanceStatus) -> None:
        if not armed.is_set():
            return
        if not first_call.is_set():
            first_call.set()
            release.wait(10)  # the first installer is held here, with its state in hand
        seen.append(status.version)

    watched.add_listener(slow_to_record)
    wait_for(lambda: watched.current().version == off.version, timeout=5)
    watched.stop(timeout=2)  # from here only the two threads below install
    armed.set()
    # Newer than anything in Redis, so nothing but these two installs them.
    stale = replace(emergency, version=off.version + 1)
    newest = replace(off, version=off.version + 2)
    first = threading.Thread(target=watched.install, args=(stale,))
    first.start()
    assert first_call.wait(10)
    second = threading.Thread(target=watched.install, args=(newest,))
    second.start()
    second.join(0.5)  # called out of order, the disable would be told first, here
    release.set()
    first.join(10)
    second.join(10)
    assert watched.current().version == newest.version
    assert seen == [stale.version, newest.version]
