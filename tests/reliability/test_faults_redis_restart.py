"""Redis restarted without persistence while maintenance is on, noticed by several processes."""

from __future__ import annotations

from collections.abc import Callable

import redis

from maintenance_guard import MaintenanceGuard
from tests.conftest import RedisServer
from tests.helpers import wait_for
from tests.reliability.conftest import Proc, actor

WATCHERS = 4


def test_state_lost_by_a_restart_is_restored_once_while_many_processes_notice_at_once(
    private_redis: RedisServer,
    key_prefix: str,
    make_guard: Callable[..., MaintenanceGuard],
    spawn: Callable[..., Proc],
) -> None:
    admin = make_guard(url=private_redis.url)
    enabled = admin.enable("normal", reason="migration", duration=3600, by="alice")
    # A fast poll in every process makes them all notice the empty store in the same instant.
    procs = [spawn(*actor("watch", private_redis.url, key_prefix, 0.05)) for _ in range(WATCHERS)]
    for p in procs:
        assert p.expect("ready") == f"ready {enabled.version}"

    private_redis.stop()
    private_redis.start()  # back, empty: no RDB, no AOF

    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        store = admin.store
        restored_version = enabled.version + 1
        for p in procs:
            p.expect(f"seen {restored_version} normal True", timeout=15)
        state = client.hgetall(store.state_key)  # type: ignore[attr-defined]
        assert state["mode"] == "normal" and state["reason"] == "migration"
        assert state["enabled_by"] == "alice" and state["estimated_duration"] == "3600"
        assert int(state["version"]) == restored_version  # bumped once: one restore won
        events = client.xrange(store.events_key)  # type: ignore[attr-defined]
        assert [fields["type"] for _id, fields in events] == ["state_restored"]
        assert events[0][1]["mode"] == "normal"
        # The restoring process says who it was; exactly one of the watchers did it.
        pids = {str(p.proc.pid) for p in procs}
        assert events[0][1]["pid"] in pids
        # No process ever saw maintenance end: every version each one saw blocked the work.
        for p in procs:
            seen = [line for line in p.all_lines if line.startswith("seen ")]
            assert seen and all(line.split()[2:4] == ["normal", "True"] for line in seen), seen
        # And a later change still reaches every process (nothing stuck on the old version).
        after = admin.disable(by="alice")
        for p in procs:
            p.expect(f"seen {after.version} None False", timeout=10)
        wait_for(lambda: not admin.current().is_active)
    finally:
        client.close()
