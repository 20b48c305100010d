"""Redis trouble underneath running guards: outages, restarts without persistence, policies."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from maintenance_guard import MaintenanceActive, MaintenanceGuard, StoreUnavailable
from tests.conftest import RedisServer
from tests.helpers import free_port, wait_for


def test_outage_keeps_enforcing_last_known_state_and_never_leaks_redis_errors(
    private_redis: RedisServer, make_guard: Callable[..., MaintenanceGuard]
) -> None:
    g = make_guard(url=private_redis.url)
    g.enable("normal", reason="before outage", by="alice")
    g.start()
    private_redis.stop()
    # hot path: memory only, last known state, no Redis exception
    for _ in range(100):
        assert g.is_blocked("caption_generation")
        with pytest.raises(MaintenanceActive):
            g.check("caption_generation")
        g.check("read")
    assert g.status().reason == "before outage"  # status falls back to the last known state
    with pytest.raises(StoreUnavailable):
        g.enable("emergency", reason="during outage")
    wait_for(lambda: g.store_errors > 0, timeout=5)
    assert isinstance(StoreUnavailable("x"), Exception)


def test_restart_without_persistence_restores_the_state_exactly_once(
    private_redis: RedisServer, make_guard: Callable[..., MaintenanceGuard]
) -> None:
    guards = [make_guard(url=private_redis.url) for _ in range(3)]
    guards[0].enable("normal", reason="migration", duration=3600, by="alice")
    for g in guards:
        g.start()
        wait_for(lambda g=g: g.current().is_active)
    private_redis.stop()
    private_redis.start()  # comes back empty
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    store = guards[0].store
    wait_for(lambda: client.hget(store.state_key, "mode") == "normal", timeout=10)  # type: ignore[attr-defined]
    wait_for(lambda: all(g.current().version >= 2 for g in guards), timeout=10)
    restored = [e for e in guards[0].events() if e.type == "state_restored"]
    assert len(restored) == 1
    for g in guards:
        assert g.is_blocked("job_creation")
        assert g.current().reason == "migration"
    client.close()


def test_everything_recovers_by_itself_once_redis_is_back(
    private_redis: RedisServer, make_guard: Callable[..., MaintenanceGuard]
) -> None:
    admin = make_guard(url=private_redis.url)
    web = make_guard(url=private_redis.url)
    web.start()
    private_redis.stop()
    wait_for(lambda: web.store_errors > 0, timeout=5)
    private_redis.start()
    status = admin.enable("normal", reason="after the outage")
    wait_for(lambda: web.current().version == status.version, timeout=5)
    assert web.is_blocked("job_creation")


@pytest.mark.parametrize(
    ("policy", "blocked"), [("last_known", False), ("open", False), ("closed", True)]
)
def test_on_store_error_policy_decides_when_nothing_is_known(policy: str, blocked: bool) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    g = MaintenanceGuard.from_url(url, on_store_error=policy, poll_interval=0.2)
    try:
        assert not g.state_known
        assert g.is_blocked("job_creation") is blocked
        assert not g.is_blocked("read")
        if blocked:
            with pytest.raises(MaintenanceActive):
                g.check("job_creation")
        else:
            g.check("job_creation")
    finally:
        g.stop(timeout=2)


def test_bad_policy_and_bad_url_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="on_store_error"):
        MaintenanceGuard.from_url("redis://127.0.0.1:1/0", on_store_error="maybe")
    with pytest.raises(ValueError, match="Redis URL"):
        MaintenanceGuard.from_url("http://example/0")
