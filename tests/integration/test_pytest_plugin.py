"""The pytest plugin (maintenance_guard.pytest) as an application's suite uses it: the
sample Flask + Celery app's tests (tests/sample_app, written only with the plugin's and
pytest-celery's fixtures) pass on a real Redis as well as in memory (the main run collects
them in memory), and leave no key behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from maintenance_guard import MaintenanceGuard, MemoryStore
from maintenance_guard.pytest import REDIS_URL_ENV, Maintenance, assert_allowed, assert_refused

ROOT = Path(__file__).resolve().parents[2]
TEST_KEYS = "{mg-test-*"

pytestmark = pytest.mark.timeout(300)


def run_pytest(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (REDIS_URL_ENV, "PYTEST_ADDOPTS")}
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def plugin_keys(url: str) -> list[str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return sorted(client.scan_iter(match=TEST_KEYS, count=1000))
    finally:
        client.close()


def test_the_sample_app_tests_pass_on_a_real_redis_and_leave_no_key(redis_url: str) -> None:
    before = plugin_keys(redis_url)
    run = run_pytest(["tests/sample_app", "-n", "0", "--mg-redis-url", redis_url], cwd=ROOT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "maintenance-guard: fixtures on Redis redis://" in run.stdout
    assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-1000:]
    assert plugin_keys(redis_url) == before


def test_the_plugin_is_listed_and_its_redis_store_is_private(
    redis_url: str, tmp_path: Path
) -> None:
    (tmp_path / "test_app.py").write_text(
        textwrap.dedent(
            """
            from maintenance_guard import RedisStore

            def test_on_redis(maintenance_guard_store, maintenance, maintenance_guard):
                assert isinstance(maintenance_guard_store, RedisStore)
                assert maintenance_guard_store.prefix.startswith("mg-test-")
                assert maintenance_guard.settings.key_prefix == maintenance_guard_store.prefix
                with maintenance("emergency", reason="incident"):
                    assert maintenance_guard_store.redis.exists(maintenance_guard_store.state_key)
            """
        )
    )
    env_run = run_pytest(["--trace-config", "-q"], cwd=tmp_path)
    assert "maintenance_guard.pytest" in env_run.stdout  # listed by --trace-config
    assert "isinstance(maintenance_guard_store, RedisStore)" in env_run.stdout  # in memory
    before = plugin_keys(redis_url)
    on_redis = run_pytest(["-q", "--mg-redis-url", redis_url], cwd=tmp_path)
    assert on_redis.returncode == 0, on_redis.stdout[-3000:]
    assert plugin_keys(redis_url) == before
    disabled = run_pytest(["-q", "-p", "no:maintenance_guard"], cwd=tmp_path)
    assert "fixture 'maintenance_guard_store' not found" in disabled.stdout


# -------------------------------------------------------------- the helpers themselves


@pytest.fixture
def memory_guard() -> MaintenanceGuard:
    return MaintenanceGuard(MemoryStore())


def test_maintenance_restores_an_announced_window_and_its_operations(
    memory_guard: MaintenanceGuard,
) -> None:
    memory_guard.enable(
        "normal", "deploy", duration="2h", auto_end=True, operations=["image_processing"]
    )
    with Maintenance(memory_guard)("test", reason="rehearsal"):
        assert memory_guard.status().mode.value == "test"  # type: ignore[union-attr]
    status = memory_guard.status()
    assert status.mode is not None and status.mode.value == "normal"
    assert status.reason == "deploy" and status.auto_end
    assert status.blocked_operations == ("image_processing",)
    assert status.estimated_duration is not None and 7000 < status.estimated_duration <= 7200


def test_maintenance_restores_the_state_when_the_block_raises(
    memory_guard: MaintenanceGuard,
) -> None:
    with pytest.raises(RuntimeError):
        with Maintenance(memory_guard)("emergency"):
            raise RuntimeError("boom")
    assert not memory_guard.status().is_active


def test_maintenance_refuses_bad_arguments_and_changes_nothing(
    memory_guard: MaintenanceGuard,
) -> None:
    from maintenance_guard import InvalidInput

    with pytest.raises(InvalidInput):
        with Maintenance(memory_guard)("emergency", operations=["read"]):
            pass
    with pytest.raises(InvalidInput):
        with Maintenance(memory_guard)("sideways"):
            pass
    assert not memory_guard.status().is_active


class FakeResponse:
    """The two attributes the helpers read, as Flask's and requests' responses have."""

    def __init__(self, status_code: int, headers: dict[str, str], data: bytes = b"") -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = data


def test_assert_refused_rejects_responses_that_are_not_the_guards_refusal() -> None:
    json = {"Content-Type": "application/json"}
    with pytest.raises(pytest.fail.Exception, match="got HTTP 200"):
        assert_refused(FakeResponse(200, json, b"{}"))
    with pytest.raises(pytest.fail.Exception, match="no Retry-After"):
        assert_refused(FakeResponse(503, json, b"{}"))
    with pytest.raises(pytest.fail.Exception, match="not a maintenance refusal"):
        assert_refused(FakeResponse(503, {**json, "Retry-After": "5"}, b'{"error": "db"}'))
    refusal = b'{"error": "maintenance_active", "operation": "read", "mode": "emergency"}'
    with pytest.raises(pytest.fail.Exception, match="mode 'emergency', expected 'normal'"):
        assert_refused(FakeResponse(503, {**json, "Retry-After": "5"}, refusal), mode="normal")
    with pytest.raises(pytest.fail.Exception, match="HTML page"):
        assert_refused(FakeResponse(503, {"Retry-After": "5"}, b"<html>"), operation="read")
    # Another service's 503 is not the guard's refusal: assert_allowed lets it through.
    other = FakeResponse(503, {**json, "Retry-After": "5"}, b'{"error": "db"}')
    assert assert_allowed(other) is other
    with pytest.raises(TypeError):
        assert_refused(42)
