"""Prometheus metrics over real HTTP on a real Redis: each state change, blocked and
would-be-blocked attempts, in-flight jobs, store errors, and multiprocess mode."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from maintenance_guard import MaintenanceGuard
from maintenance_guard.inflight import InflightJob, InflightRegistry
from maintenance_guard.metrics import instrument, observe_drain, render
from tests.e2e.flask_support import build_app, http, live_server, make_guard_for_app
from tests.helpers import free_port, wait_for

MODES_AND_OFF = ("normal", "test", "emergency", "off")


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in exposition text, or None if absent."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if found == labels:
            return float(match.group(4))
    return None


def test_metrics_endpoint_shows_each_change_and_attempts_over_real_http(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    guard = make_guard_for_app(make_guard)
    app = build_app(guard, METRICS=True)  # the extension mounts /metrics, exempt
    with live_server(app) as server:

        def scrape() -> str:
            status, headers, body = http("GET", server.url + "/metrics")
            assert status == 200 and headers["Content-Type"].startswith("text/plain")
            return body.decode()

        text = scrape()
        assert sample(text, "maintenance_guard_active") == 0.0
        assert sample(text, "maintenance_guard_store_up") == 1.0
        changes = "maintenance_guard_state_changes_seen_total"  # process-wide counter
        seen_before = {m: sample(text, changes, mode=m) or 0.0 for m in MODES_AND_OFF}

        guard.enable("normal", reason="db", by="alice")
        text = scrape()
        assert sample(text, "maintenance_guard_active") == 1.0
        assert sample(text, "maintenance_guard_mode", mode="normal") == 1.0
        assert sample(text, "maintenance_guard_mode", mode="test") == 0.0
        version = sample(text, "maintenance_guard_state_version")

        for _ in range(3):
            assert http("POST", server.url + "/api/jobs", {})[0] == 503
        guard.flush()
        text = scrape()
        assert (
            sample(
                text,
                "maintenance_guard_blocked_attempts_total",
                operation="job_creation",
                surface="http",
            )
            == 3.0
        )

        guard.enable("test", reason="rehearsal", by="alice")
        assert http("POST", server.url + "/api/jobs", {})[0] == 201
        assert http("GET", server.url + "/api/items")[0] == 200
        guard.flush()
        text = scrape()
        assert sample(text, "maintenance_guard_mode", mode="test") == 1.0
        assert sample(text, "maintenance_guard_state_version") == (version or 0) + 1
        would = "maintenance_guard_test_would_block_total"
        assert sample(text, would, operation="job_creation", surface="http", mode="normal") == 1.0
        assert (
            sample(text, would, operation="job_creation", surface="http", mode="emergency") == 1.0
        )
        assert sample(text, would, operation="read", surface="http", mode="emergency") == 1.0
        assert sample(text, would, operation="read", surface="http", mode="normal") is None

        guard.enable("emergency", reason="leak", by="alice")
        # The scrape itself is exempt: it still answers in an emergency.
        text = scrape()
        assert sample(text, "maintenance_guard_mode", mode="emergency") == 1.0

        guard.disable(by="alice")
        text = wait_for(
            lambda: (
                (t := scrape()) and sample(t, changes, mode="off") == seen_before["off"] + 1 and t
            ),
            timeout=10,
        )
        assert isinstance(text, str)
        assert sample(text, "maintenance_guard_active") == 0.0
        for mode in MODES_AND_OFF:
            assert sample(text, changes, mode=mode) == seen_before[mode] + 1


def test_inflight_jobs_per_operation_and_drain_durations(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    guard = make_guard()
    registry = instrument(guard)
    jobs = InflightRegistry(guard.store)
    now = time.time()
    jobs.start(InflightJob("a", "tasks.cap", "caption_generation", "w@h", 1, now))
    jobs.start(InflightJob("b", "tasks.cap", "caption_generation", "w@h", 1, now))
    jobs.start(InflightJob("c", "tasks.batch", "batch_operations", "w@h", 1, now))
    before = sample(render(registry)[0].decode(), "maintenance_guard_drain_seconds_count") or 0.0
    observe_drain(2.5)
    text = render(registry)[0].decode()
    assert sample(text, "maintenance_guard_inflight_jobs", operation="caption_generation") == 2.0
    assert sample(text, "maintenance_guard_inflight_jobs", operation="batch_operations") == 1.0
    assert sample(text, "maintenance_guard_drain_seconds_count") == before + 1
    jobs.finish(["a", "b", "c"])
    text = render(registry)[0].decode()
    assert sample(text, "maintenance_guard_inflight_jobs", operation="caption_generation") is None


def test_scrape_survives_an_unreachable_store_and_reports_it(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    guard = make_guard(url=f"redis://127.0.0.1:{free_port()}/0")
    text = render(instrument(guard))[0].decode()
    assert sample(text, "maintenance_guard_store_up") == 0.0
    errors = sample(text, "maintenance_guard_store_errors_total")
    assert errors is not None and errors >= 1
    assert sample(text, "maintenance_guard_state_known") == 0.0


def test_multiprocess_mode_merges_worker_observations_into_the_web_scrape(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    env = dict(cli_env, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    worker = textwrap.dedent(
        """
        from maintenance_guard import metrics
        metrics.observe_drain(4.0)
        metrics.observe_revocation(1.5)
        """
    )
    for _ in range(2):  # two worker processes
        subprocess.run([sys.executable, "-c", worker], env=env, check=True, timeout=60)
    web = textwrap.dedent(
        """
        import os
        from maintenance_guard import MaintenanceGuard, metrics
        guard = MaintenanceGuard.from_url(
            os.environ["MAINTENANCE_GUARD_REDIS_URL"],
            key_prefix=os.environ["MAINTENANCE_GUARD_KEY_PREFIX"],
        )
        print(metrics.render(metrics.instrument(guard))[0].decode())
        guard.stop()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", web], env=env, check=True, timeout=60, capture_output=True, text=True
    ).stdout
    assert sample(out, "maintenance_guard_drain_seconds_count") == 2.0
    assert sample(out, "maintenance_guard_drain_seconds_sum") == 8.0
    assert sample(out, "maintenance_guard_revocation_seconds_count") == 2.0
    assert sample(out, "maintenance_guard_active") == 0.0  # fleet metrics still there
    assert os.listdir(tmp_path)  # the workers wrote their files there


def test_drain_observes_its_duration_in_the_histogram(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    from maintenance_guard.drain import drain

    guard = make_guard()
    registry = instrument(guard)

    def drains() -> float:
        return sample(render(registry)[0].decode(), "maintenance_guard_drain_seconds_count") or 0.0

    before = drains()
    jobs = InflightRegistry(guard.store)
    jobs.start(InflightJob("slow", "tasks.slow", "batch_operations", "w@h", 1, time.time()))
    assert drain(guard, timeout=0).drained is False  # timed out: still observed
    jobs.finish(["slow"])
    assert drain(guard, timeout=5).drained is True
    assert drains() == before + 2
