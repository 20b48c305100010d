"""Notifications on real processes: a real HTTP receiver, real Redis, real OS processes.

Each event reaches the receiver once and in order, signed; a failed send comes again with
the same idempotency key; a slow or dead receiver never delays a switch; several
processes with the same targets send each event once; Apprise delivers through its
``json://`` scheme to the same receiver.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from maintenance_guard import InvalidInput, MaintenanceGuard
from maintenance_guard.metrics import NOTIFICATIONS
from maintenance_guard.notify import SIGNATURE_HEADER, verify_signature
from tests.conftest import ROOT
from tests.helpers import wait_for

SECRET = "s3cret-for-the-webhook-tests"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, object]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """A real HTTP server; ``answers`` is consumed one status per request (then 200)."""

    answers: list[int] = field(default_factory=list)
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append(Received(self.path, dict(self.headers), body))
                time.sleep(receiver.delay)
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def types(self) -> list[str]:
        return [str(r.json["type"]) for r in self.requests if r.path == "/hook"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    found.start()
    yield found
    found.stop()


@pytest.fixture
def notifying(
    make_guard: Callable[..., MaintenanceGuard], receiver: Receiver
) -> Callable[..., MaintenanceGuard]:
    def make(**settings: object) -> MaintenanceGuard:
        settings.setdefault("notify_urls", (receiver.url,))
        settings.setdefault("notify_secret", SECRET)
        guard = make_guard(**settings)
        wait_for(lambda: guard._notifier is not None and guard._notifier.leader, timeout=10)
        return guard

    return make


def test_each_event_reaches_the_webhook_once_in_order_and_signed(
    notifying: Callable[..., MaintenanceGuard],
    make_guard: Callable[..., MaintenanceGuard],
    receiver: Receiver,
) -> None:
    notifying()
    admin = make_guard()
    admin.enable("normal", reason="db upgrade", by="alice", duration=3600)
    admin.post_update("migration 60% done", by="alice")
    admin.disable(by="alice")
    wait_for(lambda: len(receiver.requests) >= 3, timeout=10)
    time.sleep(0.5)  # nothing more comes
    assert receiver.types() == ["enabled", "progress_update", "disabled"]
    keys = [r.headers["Idempotency-Key"] for r in receiver.requests]
    assert len(set(keys)) == 3
    for request in receiver.requests:
        assert verify_signature(SECRET, request.headers[SIGNATURE_HEADER], request.body)
        assert not verify_signature(
            "another-secret-entirely", request.headers[SIGNATURE_HEADER], request.body
        )
        body = request.json
        assert body["idempotency_key"] == body["id"] == request.headers["Idempotency-Key"]
        assert request.headers["Maintenance-Guard-Event"] == body["type"]
    assert receiver.requests[0].json["reason"] == "db upgrade"
    assert receiver.requests[0].json["actor"] == "alice"


def test_a_failed_send_comes_again_with_the_same_key_and_keeps_the_order(
    notifying: Callable[..., MaintenanceGuard],
    make_guard: Callable[..., MaintenanceGuard],
    receiver: Receiver,
) -> None:
    receiver.answers = [500, 503]
    notifying()
    admin = make_guard()
    admin.enable("normal", reason="retry me", by="ops")
    admin.disable(by="ops")
    wait_for(lambda: "disabled" in receiver.types(), timeout=15)
    assert receiver.types() == ["enabled", "enabled", "enabled", "disabled"]
    keys = [r.headers["Idempotency-Key"] for r in receiver.requests]
    assert keys[0] == keys[1] == keys[2] != keys[3]
    retried = NOTIFICATIONS.labels(target=receiver.url, outcome="retried")
    assert retried._value.get() >= 2


def test_a_slow_receiver_never_delays_a_switch(
    notifying: Callable[..., MaintenanceGuard], receiver: Receiver
) -> None:
    receiver.delay = 3.0
    guard = notifying()  # the switching process is the sending one
    started = time.monotonic()
    guard.enable("normal", reason="slow hook", by="ops")
    guard.disable(by="ops")
    took = time.monotonic() - started
    assert took < 0.5, took
    wait_for(lambda: len(receiver.requests) >= 1, timeout=10)


def test_a_dead_receiver_is_given_up_with_an_audit_event(
    make_guard: Callable[..., MaintenanceGuard], receiver: Receiver
) -> None:
    dead = f"http://127.0.0.1:{receiver.port}/hook"
    receiver.stop()
    guard = make_guard(notify_urls=(dead,), notify_secret=SECRET, notify_retry_for=2.0)
    wait_for(lambda: guard._notifier is not None and guard._notifier.leader, timeout=10)
    started = time.monotonic()
    guard.enable("normal", reason="nobody listens", by="ops")
    assert time.monotonic() - started < 0.5

    def failed() -> list[object]:
        return [e for e in guard.store.read_events(limit=20) if e.type == "notification_failed"]

    found = wait_for(failed, timeout=15)
    event = found[0]  # type: ignore[index]
    assert event.fields["event_type"] == "enabled"
    assert event.fields["target"] == dead
    assert int(event.fields["attempts"]) >= 2
    assert NOTIFICATIONS.labels(target=dead, outcome="failed")._value.get() >= 1
    # The failure itself is never notified (it would feed itself).
    assert guard._notifier is not None and "notification_failed" not in guard._notifier.events


def test_bad_targets_are_refused_with_a_clear_error(
    make_guard: Callable[..., MaintenanceGuard],
) -> None:
    with pytest.raises(InvalidInput, match="notify_secret"):
        make_guard(notify_urls=("https://hooks.example/x",))
    with pytest.raises(InvalidInput, match="Apprise knows"):
        make_guard(notify_urls=("nosuchscheme://x",), notify_secret=SECRET)
    with pytest.raises(InvalidInput, match="not one string"):
        make_guard(notify_urls="https://hooks.example/x", notify_secret=SECRET)


def test_apprise_delivers_through_its_json_scheme(
    make_guard: Callable[..., MaintenanceGuard], receiver: Receiver
) -> None:
    url = f"json://127.0.0.1:{receiver.port}/apprise"
    guard = make_guard(notify_urls=(url,))
    wait_for(lambda: guard._notifier is not None and guard._notifier.leader, timeout=10)
    make_guard().enable("emergency", reason="leak", by="ops")
    request = wait_for(
        lambda: next((r for r in receiver.requests if r.path == "/apprise"), None), timeout=10
    )
    body = request.json  # type: ignore[attr-defined]
    assert "enabled" in str(body["title"])
    assert "leak" in str(body["message"])


SENDER = """
import sys, time
from maintenance_guard import MaintenanceGuard
guard = MaintenanceGuard.from_url(sys.argv[1], key_prefix=sys.argv[2], poll_interval=0.2,
                                  notify_urls=(sys.argv[3],), notify_secret=sys.argv[4])
print("ready", flush=True)
try:
    while True:
        time.sleep(0.1)
except KeyboardInterrupt:
    pass
"""


def test_three_processes_with_the_same_target_send_each_event_once(
    redis_url: str,
    key_prefix: str,
    make_guard: Callable[..., MaintenanceGuard],
    receiver: Receiver,
) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SENDER, redis_url, key_prefix, receiver.url, SECRET],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        admin = make_guard()
        time.sleep(1.0)  # one of them holds the lock
        for i in range(4):
            admin.enable("normal", reason=f"round {i}", by="ops")
            admin.disable(by="ops")
        wait_for(lambda: len(receiver.requests) >= 8, timeout=15)
        # The sender leaves (its lock is released on the way out); another takes over.
        sender = _sender(admin)
        for proc in procs:
            if proc.pid == sender:
                proc.send_signal(signal.SIGINT)
                proc.wait(10)
        admin.enable("normal", reason="after the sender left", by="ops")
        wait_for(lambda: len(receiver.requests) >= 9, timeout=15)
        time.sleep(1.0)
        keys = [r.headers["Idempotency-Key"] for r in receiver.requests]
        assert len(keys) == len(set(keys)) == 9, receiver.types()
        assert receiver.types() == ["enabled", "disabled"] * 4 + ["enabled"]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


def _sender(guard: MaintenanceGuard) -> int:
    holder = guard.store.redis.get(guard.store.key("notify:lock"))  # type: ignore[attr-defined]
    assert holder, "no process holds the notification lock"
    return int(str(holder).split(":")[1])
