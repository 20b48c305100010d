"""Session invalidation and login refusal on a real Redis (and a real Flask-Session app)."""

from __future__ import annotations

import json
import pickle
import threading
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import redis
import requests

from maintenance_guard import InvalidInput, MaintenanceGuard, MaintenanceMode
from maintenance_guard.sessions import SessionInvalidator, admin_predicate
from tests.helpers import free_port


@pytest.fixture
def bytes_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def session_prefix(key_prefix: str) -> str:
    # Under the test's key prefix, so the key_prefix fixture deletes leftovers.
    return f"{{{key_prefix}}}:session:"


def write_sessions(client: redis.Redis, prefix: str, n: int, admin_every: int) -> set[bytes]:
    """Write ``n`` msgpack sessions (Flask-Session 0.7+ layout); return the admin keys."""
    encode = msgspec.msgpack.Encoder().encode
    admin: set[bytes] = set()
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        key = f"{prefix}sid{i:06d}".encode()
        data: dict[str, Any] = {"_permanent": True, "_user_id": str(i), "csrf": "x" * 20}
        if i % admin_every == 0:
            data["is_admin"] = True
            admin.add(key)
        pipe.set(key, encode(data), ex=3600)
    pipe.execute()
    return admin


def test_non_admin_sessions_are_deleted_admin_sessions_and_other_keys_stay(
    bytes_client: redis.Redis, key_prefix: str
) -> None:
    prefix = session_prefix(key_prefix)
    admin = write_sessions(bytes_client, prefix, 5000, admin_every=97)
    others = {
        f"{{{key_prefix}}}:sessionx:1".encode(): b"not a session",
        f"{{{key_prefix}}}:session".encode(): b"no colon",
        f"{{{key_prefix}}}:cache:session:1".encode(): b"elsewhere",
    }
    for key, value in others.items():
        bytes_client.set(key, value)

    result = SessionInvalidator(bytes_client, prefix, batch_size=500).invalidate_non_admin()

    left = set(bytes_client.scan_iter(match=f"{prefix}*", count=1000))
    assert left == admin
    assert result.scanned == 5000
    assert result.kept_admin == len(admin)
    assert result.invalidated == 5000 - len(admin)
    assert result.undecodable == 0
    for key, value in others.items():
        assert bytes_client.get(key) == value


def test_json_sessions_are_read_and_admin_user_ids_are_kept(
    bytes_client: redis.Redis, key_prefix: str
) -> None:
    prefix = session_prefix(key_prefix)
    bytes_client.set(prefix + "a", json.dumps({"_user_id": "7"}))
    bytes_client.set(prefix + "b", json.dumps({"_user_id": "8"}))
    bytes_client.set(prefix + "c", json.dumps({"_user_id": 7, "x": 1}))
    predicate = admin_predicate(None, admin_user_ids=[7])

    result = SessionInvalidator(bytes_client, prefix, predicate).invalidate_non_admin()

    assert sorted(bytes_client.scan_iter(match=f"{prefix}*")) == [
        (prefix + "a").encode(),
        (prefix + "c").encode(),
    ]
    assert (result.invalidated, result.kept_admin) == (1, 2)


def test_pickled_sessions_are_read_only_when_pickle_is_listed(
    bytes_client: redis.Redis, key_prefix: str
) -> None:
    prefix = session_prefix(key_prefix)
    bytes_client.set(prefix + "old-admin", pickle.dumps({"is_admin": True}))

    unreadable = SessionInvalidator(bytes_client, prefix).invalidate_non_admin()
    # Without pickle the session cannot prove it is an admin's: it is invalidated.
    assert unreadable.undecodable == 1 and unreadable.invalidated == 1
    assert bytes_client.exists(prefix + "old-admin") == 0

    bytes_client.set(prefix + "old-admin", pickle.dumps({"is_admin": True}))
    bytes_client.set(prefix + "old-user", pickle.dumps({"is_admin": False}))
    legacy = SessionInvalidator(
        bytes_client, prefix, formats=("msgpack", "json", "pickle")
    ).invalidate_non_admin()
    assert (legacy.kept_admin, legacy.invalidated, legacy.undecodable) == (1, 1, 0)
    assert bytes_client.exists(prefix + "old-admin") == 1


def test_a_session_promoted_while_being_judged_is_judged_again_and_kept(
    bytes_client: redis.Redis, key_prefix: str
) -> None:
    prefix = session_prefix(key_prefix)
    encode = msgspec.msgpack.Encoder().encode
    key = prefix + "racy"
    bytes_client.set(key, encode({"_user_id": "1"}))
    seen = []

    def promote_on_first_look(session: Any) -> bool:
        if not seen:
            # Another request makes this user an admin between our read and our delete.
            bytes_client.set(key, encode({"_user_id": "1", "is_admin": True}))
        seen.append(dict(session))
        return bool(session.get("is_admin"))

    result = SessionInvalidator(bytes_client, prefix, promote_on_first_look).invalidate_non_admin()

    assert bytes_client.exists(key) == 1
    assert len(seen) == 2 and seen[1]["is_admin"] is True
    assert (result.invalidated, result.kept_admin) == (0, 1)


def test_a_client_that_decodes_responses_still_reads_msgpack_sessions(
    redis_client: redis.Redis, bytes_client: redis.Redis, key_prefix: str
) -> None:
    prefix = session_prefix(key_prefix)
    admin = write_sessions(bytes_client, prefix, 20, admin_every=4)
    SessionInvalidator(redis_client, prefix).invalidate_non_admin()
    assert set(bytes_client.scan_iter(match=f"{prefix}*")) == admin


@pytest.mark.parametrize(
    "kwargs",
    [{"key_prefix": ""}, {"batch_size": 0}, {"formats": ("yaml",)}, {"formats": ()}],
)
def test_bad_invalidator_settings_are_refused(
    bytes_client: redis.Redis, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInput):
        SessionInvalidator(bytes_client, **kwargs)


def test_non_admin_login_is_refused_during_emergency_and_opens_after(
    guard: MaintenanceGuard,
) -> None:
    assert guard.login_allowed(False)
    guard.enable(MaintenanceMode.NORMAL, reason="upgrade", by="t")
    assert guard.login_allowed(False)
    guard.enable(MaintenanceMode.EMERGENCY, reason="leak", by="t")
    assert not guard.login_allowed(False, user="bob")
    assert guard.login_allowed(True)
    guard.flush()
    assert guard.store.read_attempt_counts().get("blocked:login:-") == 1
    guard.disable(by="t")
    assert guard.login_allowed(False)


def test_flask_session_app_over_http_loses_non_admin_sessions_keeps_admin_ones(
    bytes_client: redis.Redis, key_prefix: str
) -> None:
    from flask import Flask, session
    from flask_session import Session
    from werkzeug.serving import make_server

    prefix = session_prefix(key_prefix)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test",
        SESSION_TYPE="redis",
        SESSION_REDIS=bytes_client,
        SESSION_KEY_PREFIX=prefix,
    )
    Session(app)

    @app.get("/login/<name>")
    def login(name: str) -> str:
        session["user"] = name
        session["is_admin"] = name == "root"
        return "ok"

    @app.get("/whoami")
    def whoami() -> str:
        return str(session.get("user", "anonymous"))

    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        clients = {name: requests.Session() for name in ("root", "alice", "bob")}
        for name, http in clients.items():
            assert http.get(f"{base}/login/{name}", timeout=5).text == "ok"
            assert http.get(f"{base}/whoami", timeout=5).text == name

        result = SessionInvalidator(bytes_client, prefix).invalidate_non_admin()

        assert (result.invalidated, result.kept_admin) == (2, 1)
        assert clients["root"].get(f"{base}/whoami", timeout=5).text == "root"
        assert clients["alice"].get(f"{base}/whoami", timeout=5).text == "anonymous"
        assert clients["bob"].get(f"{base}/whoami", timeout=5).text == "anonymous"
    finally:
        server.shutdown()
        thread.join(5)


def test_flask_extension_invalidates_sessions_in_an_emergency_and_refuses_non_admin_login(
    bytes_client: redis.Redis, key_prefix: str, guard: MaintenanceGuard
) -> None:
    from flask import Flask, session
    from flask_session import Session
    from werkzeug.serving import make_server

    from maintenance_guard.flask import FlaskMaintenance

    prefix = session_prefix(key_prefix)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test",
        SESSION_TYPE="redis",
        SESSION_REDIS=bytes_client,
        SESSION_KEY_PREFIX=prefix,
        MAINTENANCE_GUARD_EXEMPT_ENDPOINTS=("static", "login"),
    )
    Session(app)
    ext = FlaskMaintenance(app, guard, is_admin=lambda: bool(session.get("is_admin")))

    @app.get("/login/<name>")
    def login(name: str) -> tuple[str, int]:
        if not ext.login_allowed(name == "root"):
            return "login refused during emergency maintenance", 503
        session["user"] = name
        session["is_admin"] = name == "root"
        return "ok", 200

    @app.get("/whoami")
    def whoami() -> str:
        return str(session.get("user", "anonymous"))

    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        root, alice = requests.Session(), requests.Session()
        assert root.get(f"{base}/login/root", timeout=5).text == "ok"
        assert alice.get(f"{base}/login/alice", timeout=5).text == "ok"

        report = guard.emergency("leak", grace_period=0, kill_after=0, by="ops")

        assert report.sessions is not None and report.sessions["invalidated"] == 1
        assert root.get(f"{base}/whoami", timeout=5).text == "root"
        assert alice.get(f"{base}/whoami", timeout=5).status_code == 503  # emergency
        refused = alice.get(f"{base}/login/alice", timeout=5)
        assert refused.status_code == 503 and "login refused" in refused.text
        assert requests.get(f"{base}/login/root", timeout=5).text == "ok"

        guard.disable(by="ops")

        # The invalidated session stays invalidated; logging in again works.
        assert alice.get(f"{base}/whoami", timeout=5).text == "anonymous"
        assert alice.get(f"{base}/login/alice", timeout=5).text == "ok"
        assert alice.get(f"{base}/whoami", timeout=5).text == "alice"
    finally:
        server.shutdown()
        thread.join(5)
