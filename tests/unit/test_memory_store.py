"""`MemoryStore`: the in-process store an application's own unit tests can use."""

from __future__ import annotations

import threading

import pytest

from maintenance_guard import (
    InvalidInput,
    MaintenanceActive,
    MaintenanceGuard,
    MaintenanceMode,
    MemoryStore,
)
from maintenance_guard.inflight import InflightRegistry
from tests.helpers import wait_for


def test_guards_sharing_a_memory_store_switch_together_and_audit_each_change() -> None:
    store = MemoryStore()
    admin = MaintenanceGuard(store)
    web = MaintenanceGuard(store)
    seen = threading.Event()
    web.add_listener(lambda status: seen.set())
    try:
        admin.enable("normal", reason="db upgrade", by="alice")
        assert seen.wait(5)  # notified, as over pub/sub
        assert web.is_blocked("caption_generation") and not web.is_blocked("read")
        with pytest.raises(MaintenanceActive):
            web.check("job_creation")
        admin.enable("emergency", reason="leak", by="alice")
        wait_for(lambda: web.current().mode is MaintenanceMode.EMERGENCY, 5)
        admin.disable(by="alice")
        wait_for(lambda: not web.current().is_active, 5)
        types = [e.type for e in admin.events()]
        assert types == ["disabled", "mode_changed", "enabled"]
        assert admin.current().version == 3
    finally:
        admin.stop(timeout=2)
        web.stop(timeout=2)


def test_memory_store_counts_refusals_and_ends_an_auto_end_on_its_own_clock() -> None:
    now = [1_000_000.0]
    store = MemoryStore(clock=lambda: now[0])
    guard = MaintenanceGuard(store, clock=lambda: now[0])
    try:
        started = guard.enable("normal", reason="short", duration=60, auto_end=True)
        assert started.started_at == now[0]  # stamped by the store's clock
        with pytest.raises(MaintenanceActive):
            guard.check("caption_generation", surface="publish")
        assert guard.attempt_counts()["blocked"]["caption_generation"]["publish"] == 1
        now[0] += 61
        assert not guard.is_blocked("caption_generation")
        wait_for(lambda: store.load_state().mode is None, 5)  # type: ignore[union-attr]
        assert guard.events()[0].type == "auto_ended"
    finally:
        guard.stop(timeout=2)


def test_redis_only_records_refuse_a_memory_store_clearly() -> None:
    with pytest.raises(InvalidInput, match="need the Redis state store"):
        InflightRegistry(MemoryStore())
