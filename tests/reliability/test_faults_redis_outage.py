"""Redis down under publish and request load: no raw Redis error reaches a caller.

The outage lasts ``OUTAGE_SECONDS``: 6 s in the default run, 30 s with ``MG_LONG_FAULTS=1``
(the issue's scenario; CI's default stays quick). Producers publish through a Celery app
with the guard installed (to the real RabbitMQ, which stays up) and clients hit a Flask app
over real HTTP, all the time. Redis then comes back (empty: no persistence) and everything
recovers by itself.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from maintenance_guard import MaintenanceActive, MaintenanceGuard
from tests.conftest import RedisServer
from tests.e2e.flask_support import ENDPOINT_OPERATIONS, build_app, live_server
from tests.helpers import wait_for
from tests.reliability.conftest import OUTAGE_SECONDS
from tests.reliability.publishing import TASK_OPERATIONS, guarded_producer, queue_length
from tests.reliability.web import Browser

POLL = 0.2


class Load:
    """Threads that publish and send requests until stopped, tallying every outcome."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def note(self, outcome: str, unexpected: str | None = None) -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            if unexpected is not None and len(self.unexpected) < 20:
                self.unexpected.append(unexpected)

    def run(self, name: str, step: Callable[[], str | None]) -> None:
        def loop() -> None:
            while not self.stop.is_set():
                try:
                    outcome = step()
                except Exception as exc:  # the point: nothing but expected answers
                    self.note(f"{name}:exception", f"{name}: {type(exc).__module__}.{exc!r}")
                    continue
                if outcome is not None:
                    self.note(f"{name}:{outcome}")
                time.sleep(0.005)

        thread = threading.Thread(target=loop, daemon=True)
        self.threads.append(thread)
        thread.start()

    def finish(self) -> Counter[str]:
        self.stop.set()
        for t in self.threads:
            t.join(15)
        with self.lock:
            return Counter(self.outcomes)


@pytest.mark.slow
def test_redis_outage_under_publish_and_request_load_keeps_enforcing_and_recovers_by_itself(
    private_redis: RedisServer,
    make_guard: Callable[..., MaintenanceGuard],
    record_property: Callable[[str, object], None],
) -> None:
    def guard_for(**kw: Any) -> MaintenanceGuard:
        kw.setdefault("poll_interval", POLL)
        return make_guard(
            url=private_redis.url,
            task_operations=TASK_OPERATIONS,
            endpoint_operations=ENDPOINT_OPERATIONS,
            **kw,
        )

    admin = guard_for()
    producer_guard = guard_for()
    web_guard = guard_for()
    admin.enable("normal", reason="outage drill", by="alice")
    for g in (producer_guard, web_guard):
        g.start()
        wait_for(lambda g=g: g.current().is_active)

    with (
        guarded_producer(producer_guard) as (app, queue),
        live_server(build_app(web_guard)) as server,
    ):
        web = Browser(server.url)
        operator = Browser(server.url)
        operator.login_admin()
        load = Load()

        def publish_blocked() -> str:
            try:
                app.send_task("rel.caption", args=["x"])
            except MaintenanceActive:
                return "refused"
            return "published-while-blocked"

        def publish_deferrable() -> str:
            # Deferring needs Redis; while it is down the caller gets a refusal, not a
            # redis-py error.
            try:
                app.send_task("rel.job", args=["x"], on_maintenance="defer")
            except MaintenanceActive:
                return "refused"
            return "deferred"

        reads_published = Counter[str]()

        def publish_read() -> str:
            app.send_task("rel.read", args=["x"])
            with load.lock:
                reads_published["n"] += 1
            return "published"

        def request_blocked() -> str:
            status, headers, _ = web.post("/api/jobs", {"name": "j"})
            return f"{status}" + ("+retry-after" if "Retry-After" in headers else "")

        def request_read() -> str:
            status, _, _ = web.get("/api/items")
            return str(status)

        def request_status() -> str:
            status, _, body = web.get("/api/maintenance/status")
            data = json.loads(body)
            return f"{status}:{'on' if data['is_active'] else 'off'}"

        for name, step in [
            ("publish_blocked", publish_blocked),
            ("publish_deferrable", publish_deferrable),
            ("publish_read", publish_read),
            ("request_blocked", request_blocked),
            ("request_read", request_read),
            ("request_status", request_status),
        ]:
            load.run(name, step)
        wait_for(lambda: sum(load.outcomes.values()) > 50)

        private_redis.stop()
        outage_end = time.monotonic() + OUTAGE_SECONDS
        # While Redis is down: the admin API answers a clear 503, never a 500 ...
        status, _, body = operator.admin_post(
            "/api/maintenance/disable", {"reason": "during outage"}
        )
        assert status == 503, (status, body)
        assert json.loads(body)["error"] == "store_unavailable"
        # ... and processes that start now, knowing nothing, follow on_store_error.
        fresh = {p: guard_for(on_store_error=p) for p in ("closed", "open", "last_known")}
        assert fresh["closed"].is_blocked("caption_generation")
        assert not fresh["open"].is_blocked("caption_generation")
        assert not fresh["last_known"].is_blocked("caption_generation")
        with pytest.raises(MaintenanceActive):
            fresh["closed"].check("job_creation")
        assert not fresh["closed"].is_blocked("read")
        while time.monotonic() < outage_end:
            assert load.unexpected == []
            time.sleep(0.2)
        during = load.finish()
        assert all(g.store_errors > 0 for g in (producer_guard, web_guard))

        assert load.unexpected == [], load.unexpected
        assert during["publish_blocked:refused"] > 0
        assert during["publish_deferrable:refused"] > 0
        assert during["request_blocked:503+retry-after"] > 0
        assert during["request_read:200"] > 0 and during["request_status:200:on"] > 0
        expected_keys = {
            "publish_blocked:refused",
            "publish_deferrable:refused",
            "publish_deferrable:deferred",  # before the outage, Redis could park them
            "publish_read:published",
            "request_blocked:503+retry-after",
            "request_read:200",
            "request_status:200:on",
        }
        assert set(during) <= expected_keys, during
        # Only the allowed reads reached the broker; every refused publish left nothing.
        wait_for(lambda: queue_length(queue) == reads_published["n"], timeout=10)

        # Redis comes back empty. The processes restore the state they knew, by themselves.
        back = time.monotonic()
        private_redis.start()
        raw = redis.Redis.from_url(private_redis.url, decode_responses=True)
        state_key = admin.store.state_key  # type: ignore[attr-defined]
        wait_for(lambda: raw.hget(state_key, "mode") == "normal", timeout=10)
        raw.close()
        ended = admin.disable(by="alice", reason="drill over")
        everyone = [producer_guard, web_guard, *fresh.values()]
        wait_for(lambda: all(g.current().version >= ended.version for g in everyone), timeout=10)
        recovered_after = time.monotonic() - back
        record_property("recovered_after_seconds", round(recovered_after, 3))
        for g in everyone:
            assert not g.is_blocked("caption_generation")
        app.send_task("rel.caption", args=["after"])
        status, _, _ = web.post("/api/jobs", {"name": "after"})
        assert status == 201
        assert json.loads(web.get("/api/maintenance/status")[2])["is_active"] is False
        restored = [e for e in admin.events() if e.type == "state_restored"]
        assert len(restored) == 1
        # The admin API works again.
        status, _, _ = operator.admin_post(
            "/api/maintenance/enable", {"mode": "normal", "reason": "again"}
        )
        assert status == 200
