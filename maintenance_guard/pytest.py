"""pytest plugin: test what your own app does in normal, emergency and test mode.

Loaded automatically when maintenance-guard is installed (the ``pytest11`` entry point
``maintenance_guard``; ``-p no:maintenance_guard`` turns it off). Fixtures:

- ``maintenance_guard_store``: a `MemoryStore`, or with ``--mg-redis-url URL`` (or
  ``$MAINTENANCE_GUARD_TEST_REDIS_URL``) a `RedisStore` on that Redis under a private
  key prefix whose keys are deleted after the test (nothing else is touched).
- ``maintenance_guard_settings``: the `GuardSettings` of the guard; override it to
  change operations, retry times, worker policy.
- ``maintenance_guard``: a `MaintenanceGuard` on that store, stopped after the test.
- ``maintenance``: ``with maintenance("emergency", reason=...):`` switches the guard for
  the block and restores what was there before (nesting works).

Helpers (import them from ``maintenance_guard.pytest``): `assert_refused` and
`assert_allowed` take a callable (a Celery submission, a service call) or an HTTP
response (Flask's test client, requests); `parked_tasks` lists what the Celery
adapter parked for replay after maintenance.

```python
from maintenance_guard.celery import install, uninstall
from maintenance_guard.pytest import assert_allowed, assert_refused

@pytest.fixture
def celery_app(celery_app, maintenance_guard):    # pytest-celery's fixture, guarded
    install(celery_app, maintenance_guard)
    yield celery_app
    uninstall(celery_app)

def test_uploads_refused(celery_app, maintenance):
    with maintenance("normal", operations=["file_upload"]):
        assert_refused(lambda: process_upload.delay(1), operation="file_upload")
```
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from .errors import MaintenanceActive
from .guard import MaintenanceGuard
from .settings import GuardSettings
from .status import MaintenanceStatus
from .store import MemoryStore, RedisStore, StateStore
from .urls import mask_url

if TYPE_CHECKING:
    from .deferred import DeferredEntry

REDIS_URL_ENV = "MAINTENANCE_GUARD_TEST_REDIS_URL"
ACTOR = "pytest"

__all__ = [
    "REDIS_URL_ENV",
    "Maintenance",
    "assert_allowed",
    "assert_refused",
    "parked_tasks",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("maintenance_guard", "maintenance-guard")
    group.addoption(
        "--mg-redis-url",
        dest="mg_redis_url",
        default=None,
        metavar="URL",
        help=(
            "run the maintenance_guard fixtures on this Redis (a private key prefix per "
            f"test, deleted afterwards) instead of in memory; default ${REDIS_URL_ENV}"
        ),
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    url = config.getoption("mg_redis_url", None) or os.environ.get(REDIS_URL_ENV)
    if not url:
        return None
    return f"maintenance-guard: fixtures on Redis {mask_url(url)}"


@pytest.fixture
def maintenance_guard_store(request: pytest.FixtureRequest) -> Iterator[StateStore]:
    """The guard's store: in memory, or on ``--mg-redis-url`` under a private prefix."""
    url = request.config.getoption("mg_redis_url", None) or os.environ.get(REDIS_URL_ENV)
    if not url:
        yield MemoryStore()
        return
    store = RedisStore.from_url(url, prefix=f"mg-test-{uuid.uuid4().hex[:12]}")
    try:
        yield store
    finally:
        _delete_keys_of(store)


@pytest.fixture
def maintenance_guard_settings(maintenance_guard_store: StateStore) -> GuardSettings:
    """Settings of the ``maintenance_guard`` fixture; override to change them."""
    prefix = getattr(maintenance_guard_store, "prefix", None)
    return GuardSettings(key_prefix=prefix) if prefix else GuardSettings()


@pytest.fixture
def maintenance_guard(
    maintenance_guard_store: StateStore, maintenance_guard_settings: GuardSettings
) -> Iterator[MaintenanceGuard]:
    """A `MaintenanceGuard` on ``maintenance_guard_store``, maintenance off."""
    guard = MaintenanceGuard(maintenance_guard_store, maintenance_guard_settings)
    try:
        yield guard
    finally:
        guard.stop(timeout=2.0)


@pytest.fixture
def maintenance(maintenance_guard: MaintenanceGuard) -> Maintenance:
    """``with maintenance(mode, reason=..., operations=...):`` maintenance for a block."""
    return Maintenance(maintenance_guard)


@dataclass
class Maintenance:
    """Switches one guard into maintenance for a ``with`` block and back."""

    guard: MaintenanceGuard

    @contextmanager
    def __call__(
        self,
        mode: str = "normal",
        *,
        reason: str = "tests",
        operations: Iterable[str] | None = None,
        duration: int | str | None = None,
    ) -> Iterator[MaintenanceStatus]:
        """Enable ``mode`` (``normal``, ``emergency`` or ``test``; ``operations``
        narrows what normal mode blocks) and yield the new status; on leaving (also on
        an exception) the state before the block is back: off, or the same mode, reason,
        operations, remaining duration and auto-end. Emergency here is the state only:
        no worker is stopped (`MaintenanceGuard.emergency` does that)."""
        previous = self.guard.status(with_jobs=False)
        status = self.guard.enable(mode, reason, duration=duration, by=ACTOR, operations=operations)
        try:
            yield status
        finally:
            if previous.mode is None:
                self.guard.disable(by=ACTOR)
            else:
                remaining = _remaining(previous, self.guard.now())
                self.guard.enable(
                    previous.mode,
                    previous.reason,
                    by=ACTOR,
                    operations=list(previous.blocked_operations) or None,
                    duration=remaining,
                    auto_end=previous.auto_end and remaining is not None,
                )


def assert_refused(
    target: Callable[[], object] | Any,
    *,
    operation: str | None = None,
    mode: str | None = None,
) -> MaintenanceActive | dict[str, Any] | None:
    """Fail unless maintenance refused ``target``.

    ``target`` is a callable (it must raise `MaintenanceActive`; the exception is
    returned) or an HTTP response (it must be a 503 with ``Retry-After``; its JSON body
    is returned, None for the HTML page). ``operation`` and ``mode``, when given, must
    be what the refusal names (for a response that needs the JSON body: ask for it with
    ``Accept: application/json``).
    """
    __tracebackhide__ = True
    if _is_response(target):
        status_code, headers, body = _response_parts(target)
        if status_code != 503:
            pytest.fail(f"expected a 503 maintenance refusal, got HTTP {status_code}")
        if not headers.get("Retry-After"):
            pytest.fail("the 503 has no Retry-After header")
        if body is None and (operation is not None or mode is not None):
            pytest.fail("the refusal is the HTML page; send Accept: application/json")
        if body is not None:
            if body.get("error") != "maintenance_active":
                pytest.fail(f"the 503 is not a maintenance refusal: {body!r}")
            _expect("operation", operation, body.get("operation"))
            _expect("mode", mode, body.get("mode"))
        return body
    if not callable(target):
        raise TypeError(f"assert_refused takes a callable or a response, not {target!r}")
    try:
        result = target()
    except MaintenanceActive as refused:
        _expect("operation", operation, refused.operation)
        _expect("mode", mode, refused.mode)
        return refused
    pytest.fail(f"expected maintenance to refuse the call; it returned {result!r}")


def assert_allowed(target: Callable[[], object] | Any) -> Any:
    """Fail if maintenance refused ``target``; return the call's result (or the response).

    A callable must not raise `MaintenanceActive` (other exceptions propagate); a
    response must not be the guard's 503.
    """
    __tracebackhide__ = True
    if _is_response(target):
        status_code, _headers, body = _response_parts(target)
        if status_code == 503 and (body is None or body.get("error") == "maintenance_active"):
            pytest.fail(f"maintenance refused the request: {body!r}")
        return target
    if not callable(target):
        raise TypeError(f"assert_allowed takes a callable or a response, not {target!r}")
    try:
        return target()
    except MaintenanceActive as refused:
        pytest.fail(
            f"maintenance refused the call ({refused.mode} mode, "
            f"operation {refused.operation!r}): {refused.message}"
        )


def parked_tasks(app: Any) -> list[DeferredEntry]:
    """What the Celery adapter parked for replay after maintenance for ``app`` (refused
    submissions with ``on_maintenance="defer"`` and messages a worker held back), oldest
    first. Raises `LookupError` if ``install`` was not called on ``app``."""
    from .celery import installation_of  # Celery is imported only by those who use it

    inst = installation_of(app)
    if inst is None:
        raise LookupError("maintenance_guard.celery.install was not called on this app")
    return inst.deferred.entries()


def _remaining(status: MaintenanceStatus, now: float) -> int | None:
    if status.started_at is None or status.estimated_duration is None:
        return None
    return max(1, int(round(status.started_at + status.estimated_duration - now)))


def _expect(what: str, wanted: str | None, got: object) -> None:
    __tracebackhide__ = True
    if wanted is not None and got != wanted:
        pytest.fail(f"refused with {what} {got!r}, expected {wanted!r}")


def _is_response(target: object) -> bool:
    return hasattr(target, "status_code") and hasattr(target, "headers")


def _response_parts(response: Any) -> tuple[int, Any, dict[str, Any] | None]:
    """Status code, headers and the JSON body (None if not JSON) of a Flask/werkzeug
    test response or a requests response."""
    content_type = str(response.headers.get("Content-Type", ""))
    body = None
    if content_type.startswith("application/json"):
        raw = response.get_data() if hasattr(response, "get_data") else response.content
        loaded = json.loads(raw)
        body = loaded if isinstance(loaded, dict) else None
    return int(response.status_code), response.headers, body


def _delete_keys_of(store: RedisStore) -> None:
    client = store.redis
    keys = list(client.scan_iter(match=store.key("*"), count=500))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()
