"""Server-Sent Events for the live status: a thread-safe fan-out of guard changes.

The guard's watcher thread calls `StatusBroadcaster.publish` on every state change; each
open stream has its own bounded mailbox and a generator that turns mailbox entries into
``event: status`` messages, with a heartbeat comment when nothing happens. One stream
holds one server thread (threaded dev server, gunicorn ``gthread``) while it is open.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ..guard import MaintenanceGuard
from ..status import MaintenanceStatus

_MAILBOX_SIZE = 64


class TooManyStreams(Exception):
    """Raised by `StatusBroadcaster.subscribe` when the client limit is reached."""


class _Mailbox:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.items: deque[MaintenanceStatus] = deque(maxlen=_MAILBOX_SIZE)
        self.closed = False

    def put(self, status: MaintenanceStatus) -> None:
        with self.cond:
            self.items.append(status)
            self.cond.notify()

    def take(self, timeout: float) -> list[MaintenanceStatus]:
        with self.cond:
            if not self.items and not self.closed:
                self.cond.wait(timeout)
            out = list(self.items)
            self.items.clear()
            return out


class StatusBroadcaster:
    """Fans each state change out to every open stream. Thread-safe."""

    def __init__(self, guard: MaintenanceGuard, *, max_clients: int = 200) -> None:
        self.guard = guard
        self.max_clients = max_clients
        self._lock = threading.Lock()
        self._mailboxes: set[_Mailbox] = set()
        self._listening = False

    @property
    def client_count(self) -> int:
        """Streams open now."""
        with self._lock:
            return len(self._mailboxes)

    def publish(self, status: MaintenanceStatus) -> None:
        """Deliver ``status`` to every open stream (called from the guard's watcher)."""
        with self._lock:
            boxes = list(self._mailboxes)
        for box in boxes:
            box.put(status)

    def subscribe(self) -> _Mailbox:
        """A new mailbox; raises `TooManyStreams` past ``max_clients``."""
        with self._lock:
            if len(self._mailboxes) >= self.max_clients:
                raise TooManyStreams(f"at most {self.max_clients} status streams at once")
            if not self._listening:
                self.guard.add_listener(self.publish)
                self._listening = True
            box = _Mailbox()
            self._mailboxes.add(box)
            return box

    def unsubscribe(self, box: _Mailbox) -> None:
        """Forget a mailbox (its stream ended)."""
        with self._lock:
            self._mailboxes.discard(box)
        with box.cond:
            box.closed = True
            box.cond.notify_all()

    def stream(
        self,
        box: _Mailbox,
        render: Callable[[MaintenanceStatus | None], dict[str, Any]],
        *,
        heartbeat: float = 15.0,
        max_age: float = 600.0,
    ) -> Iterator[str]:
        """The SSE text for one client: the current state first, then one event per change.

        Ends after ``max_age`` seconds (the browser's EventSource reconnects), which frees
        the server thread of a client that vanished without closing its socket.
        """
        try:
            yield "retry: 2000\n\n"
            yield _event(render(None))
            deadline = time.monotonic() + max_age
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                changes = box.take(min(heartbeat, left))
                if box.closed:
                    return
                if not changes:
                    yield ": heartbeat\n\n"
                for status in changes:
                    yield _event(render(status))
        finally:
            self.unsubscribe(box)


def _event(data: dict[str, Any]) -> str:
    # json.dumps never emits raw newlines, so one data: line carries the whole payload.
    version = data.get("version")
    head = f"id: {version}\n" if version is not None else ""
    return f"{head}event: status\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
