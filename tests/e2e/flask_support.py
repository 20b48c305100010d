"""A small Flask app wired to the guard, and a real threaded HTTP server for it.

Shared by the Flask integration tests and the browser tests.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, jsonify, request, session
from werkzeug.serving import make_server

from maintenance_guard import MaintenanceGuard
from maintenance_guard.flask import FlaskMaintenance, maintenance_operation
from tests.helpers import free_port

ENDPOINT_OPERATIONS = {
    "jobs_*": "job_creation",
    "/api/batches*": "batch_operations",
}


def build_app(guard: MaintenanceGuard, **config: Any) -> Flask:
    """An app with one route per kind of operation and a toy login (user "admin" is admin)."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "test-secret-key-" + "x" * 32
    app.config.update({f"MAINTENANCE_GUARD_{k}": v for k, v in config.items()})
    app.config.setdefault("MAINTENANCE_GUARD_EXEMPT_ENDPOINTS", ["static", "login"])
    FlaskMaintenance(
        app,
        guard,
        is_admin=lambda: session.get("user") == "admin",
        user_name=lambda: session.get("user"),
    )

    @app.post("/login")
    def login() -> Any:
        user = (request.get_json(silent=True) or request.form or {}).get("user", "")
        session["user"] = str(user)
        return jsonify({"user": session["user"]})

    @app.get("/login/<user>")
    def login_get(user: str) -> Any:
        session["user"] = user
        return jsonify({"user": user})

    @app.post("/api/jobs")
    def jobs_create() -> Any:
        return jsonify({"created": True}), 201

    @app.post("/api/captions")
    @maintenance_operation("caption_generation")
    def captions() -> Any:
        return jsonify({"caption": "a cat"})

    @app.post("/api/batches/run")
    def run_batch() -> Any:
        return jsonify({"batch": "started"})

    @app.post("/upload")
    @maintenance_operation("image_processing")
    def upload() -> Any:
        return "uploaded"

    @app.get("/images/new")
    @maintenance_operation("image_processing")
    def new_image() -> str:
        return "<h1>upload an image</h1>"

    @app.get("/api/items")
    def items() -> Any:
        return jsonify({"items": [1, 2, 3]})

    @app.get("/")
    def home() -> str:
        return "<h1>home</h1>"

    @app.post("/notes")
    def notes() -> str:
        return "saved"

    return app


def make_guard_for_app(make_guard: Any, **settings: Any) -> MaintenanceGuard:
    """A guard with the test app's endpoint patterns."""
    settings.setdefault("endpoint_operations", ENDPOINT_OPERATIONS)
    guard: MaintenanceGuard = make_guard(**settings)
    return guard


class LiveServer:
    """A threaded werkzeug server for ``app`` on a free port, in a daemon thread."""

    def __init__(self, app: Flask) -> None:
        self.port = free_port()
        self.server = make_server("127.0.0.1", self.port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@contextmanager
def live_server(app: Flask) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, dict[str, str], bytes]:
    """One real HTTP request; returns status, headers, body (errors included)."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class SSEReader:
    """Reads a Server-Sent Events stream over a raw socket (no buffering surprises)."""

    def __init__(self, url: str, cookie: str | None = None, timeout: float = 10) -> None:
        match = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
        assert match, url
        host, port, path = match.group(1), int(match.group(2)), match.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        if cookie:
            lines.append(f"Cookie: {cookie}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        head = self._read_until(b"\r\n\r\n")
        self.status_line = head.split(b"\r\n", 1)[0].decode()
        self.headers = head.decode("latin-1")
        self.chunked = "transfer-encoding: chunked" in self.headers.lower()
        self.text = ""

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("stream closed")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _decode(self) -> None:
        if not self.chunked:
            self.text += self.buffer.decode()
            self.buffer = b""
            return
        while True:
            size_line, sep, rest = self.buffer.partition(b"\r\n")
            if not sep:
                return
            size = int(size_line.strip() or b"0", 16)
            if len(rest) < size + 2:
                return
            self.text += rest[:size].decode()
            self.buffer = rest[size + 2 :]

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("stream closed")
        self.buffer += chunk
        self._decode()

    def next_block(self) -> str:
        """The next event block (text up to a blank line), comments included."""
        self._decode()
        while "\n\n" not in self.text:
            self._more()
        block, _, self.text = self.text.partition("\n\n")
        return block

    def next_event(self) -> dict[str, Any]:
        """The next ``status`` event's JSON data (skipping heartbeats and retry lines)."""
        while True:
            block = self.next_block()
            data = [ln[5:].strip() for ln in block.splitlines() if ln.startswith("data:")]
            if "event: status" in block and data:
                return json.loads(data[0])  # type: ignore[no-any-return]

    def close(self) -> None:
        self.sock.close()


def gunicorn_app() -> Flask:
    """App factory for the gunicorn test: guard settings from the environment."""
    guard = MaintenanceGuard.from_url(
        os.environ["MAINTENANCE_GUARD_REDIS_URL"],
        key_prefix=os.environ["MAINTENANCE_GUARD_KEY_PREFIX"],
        endpoint_operations=ENDPOINT_OPERATIONS,
        poll_interval=0.2,
    )
    return build_app(guard, SSE_HEARTBEAT=float(os.environ.get("MG_TEST_HEARTBEAT", "15")))
