"""Forked children follow their parent's state through shared memory.

A prefork Celery worker is a parent and N pool processes; each used to subscribe and poll
Redis on its own, though all learn the same thing. Now the parent's guard writes every
state it installs into a `StateFeed`, an anonymous shared mapping made before any fork,
and a forked child's `FeedFollower` reads it (a memory read every `FOLLOW_INTERVAL`; a
Celery pool process, which calls `catch_up` before each task starts, every
`LAZY_FOLLOW_INTERVAL`) and installs what changed: an idle pool process sends nothing to
Redis and holds no connection but the one it needs to write its presence record every
`PRESENCE_EVERY` seconds (and, when it runs jobs, their in-flight records).

The parent also stamps the feed on every turn of its watcher (`beat`). A child whose
parent stops beating for `stale_after` seconds (the parent died, or its watcher is
stuck) stops following and watches Redis itself, as an unrelated process does.

The mapping is a seqlock: the writer makes the sequence number odd, writes, makes it even;
a reader retries while it is odd or changed under it, and a CRC of the payload catches a
torn read on a CPU that reorders stores.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import time
import zlib
from typing import TYPE_CHECKING

from .status import MaintenanceStatus
from .watcher import StateWatcher

if TYPE_CHECKING:
    from .state import GuardState

logger = logging.getLogger("maintenance_guard")

FEED_BYTES = 256 * 1024
FOLLOW_INTERVAL = 0.01  # seconds between a child's reads of the feed
# The same in a child that calls `catch_up` where it decides (a Celery pool process,
# before each task starts): it bounds only how soon its listeners, its presence record
# and a publish from a running task hear of a change.
LAZY_FOLLOW_INTERVAL = 0.1
PRESENCE_EVERY = 5.0  # a child's presence record is rewritten this often (and on change)
TOO_BIG = 0xFFFFFFFF  # payload length meaning "the state did not fit: read it from Redis"

_SEQ = struct.Struct("<Q")  # offset 0
_BEAT = struct.Struct("<d")  # offset 8: the writer's time.monotonic() (system-wide)
_OFFSET = struct.Struct("<d")  # offset 16: the writer's clock offset to Redis
_BODY = struct.Struct("<II")  # offset 24: payload length, CRC-32
_PAYLOAD_AT = 32


class StateFeed:
    """The shared mapping one process writes and its forked descendants read."""

    def __init__(self, size: int = FEED_BYTES) -> None:
        self.owner_pid = os.getpid()
        self._map = mmap.mmap(-1, size)  # anonymous and shared: inherited across fork
        self._size = size
        # Written only once this process has forked (a process without children pays
        # nothing per change); `before_fork` writes the state the child starts from.
        self.forked = False

    def before_fork(self, status: MaintenanceStatus) -> None:
        """Called in the writer right before it forks: from now on every state is
        written, starting with ``status``."""
        if self.owned:
            self.forked = True
            self.publish(status)

    @property
    def owned(self) -> bool:
        """True in the process that made the feed (the writer)."""
        return os.getpid() == self.owner_pid

    # ---------------------------------------------------------------- writer

    def publish(self, status: MaintenanceStatus) -> None:
        """Write ``status`` for the children (owner only)."""
        fields = {
            **status.to_fields(),
            "version": str(status.version),
            "generation": status.generation,
            **status.extra,
        }
        payload = json.dumps(fields, separators=(",", ":")).encode()
        seq = _SEQ.unpack_from(self._map, 0)[0]
        _SEQ.pack_into(self._map, 0, seq + 1)
        if len(payload) > self._size - _PAYLOAD_AT:
            _BODY.pack_into(self._map, 24, TOO_BIG, 0)
        else:
            self._map[_PAYLOAD_AT : _PAYLOAD_AT + len(payload)] = payload
            _BODY.pack_into(self._map, 24, len(payload), zlib.crc32(payload))
        _SEQ.pack_into(self._map, 0, seq + 2)

    def beat(self, offset: float) -> None:
        """Say the writer is alive, with its current clock offset to Redis."""
        _OFFSET.pack_into(self._map, 16, offset)
        _BEAT.pack_into(self._map, 8, time.monotonic())

    # ---------------------------------------------------------------- reader

    def sequence(self) -> int:
        """The current sequence number (0: nothing written yet)."""
        return int(_SEQ.unpack_from(self._map, 0)[0])

    def read(self) -> tuple[int, MaintenanceStatus | None]:
        """The latest state written and its sequence number; None for a state too big
        for the feed (read it from the store). Retries across a concurrent write."""
        for _ in range(1000):
            seq = self.sequence()
            if seq % 2:
                time.sleep(0)
                continue
            length, crc = _BODY.unpack_from(self._map, 24)
            payload = b"" if length == TOO_BIG else self._map[_PAYLOAD_AT : _PAYLOAD_AT + length]
            if self.sequence() != seq:
                continue
            if length == TOO_BIG:
                return seq, None
            if zlib.crc32(payload) != crc:
                continue
            return seq, MaintenanceStatus.from_fields(json.loads(payload))
        return self.sequence(), None

    def last_beat(self) -> float:
        """The writer's last `beat` (time.monotonic(); 0.0 never)."""
        return _stable(lambda: float(_BEAT.unpack_from(self._map, 8)[0]))

    def offset(self) -> float:
        """The writer's clock offset to Redis at its last beat."""
        return _stable(lambda: float(_OFFSET.unpack_from(self._map, 16)[0]))


def _stable(read: object) -> float:
    """A value read twice alike (an 8-byte write is not atomic for Python)."""
    assert callable(read)
    first = read()
    for _ in range(100):
        second = read()
        if second == first:
            return float(second)
        first = second
    return float(first)


class FeedFollower(StateWatcher):
    """A forked child's watcher: follows the parent's `StateFeed` (see the module
    docstring), and watches Redis itself once the parent stops beating."""

    def __init__(self, guard: GuardState, feed: StateFeed) -> None:
        super().__init__(guard)
        self.feed = feed
        self.following = True
        self._seen = -1  # the feed's sequence number last installed
        self._changed = False  # `catch_up` installed a change the thread has not seen
        self.interval = FOLLOW_INTERVAL  # between the thread's reads of the feed
        interval = guard.settings.poll_interval
        self.stale_after = max(10.0, 5 * interval)

    def catch_up(self, *, from_now_on: bool = False) -> None:
        """Install the parent's state now if it changed since the last read (a memory
        read when it did not). ``from_now_on``: the process calls this wherever it
        decides, so the thread reads only every `LAZY_FOLLOW_INTERVAL`. A no-op once the
        parent stopped beating: then this process watches Redis itself."""
        if from_now_on:
            self.interval = LAZY_FOLLOW_INTERVAL
        if self.following and self.feed.sequence() != self._seen:
            self._follow()
            self._changed = True

    def _follow(self) -> None:
        seen, status = self.feed.read()
        if status is None:
            self.guard.refresh()
        else:
            self.guard.install_pushed(status)
        self._seen = seen

    def _watch(self) -> None:
        if not self.following:
            super()._watch()
            return
        guard = self.guard
        feed = self.feed
        interval = guard.settings.poll_interval
        stop = self.stop_event
        next_flush = next_presence = 0.0
        began = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            beat = feed.last_beat()
            # No beat yet: the parent's watcher may be starting; give it the same time.
            if now - (beat or began) > self.stale_after:
                break
            self.offset = feed.offset()
            if feed.sequence() != self._seen:
                self._follow()
                next_presence = 0.0
            if self._changed:
                self._changed = False
                next_presence = 0.0
            if now >= next_flush:
                next_flush = now + interval
                guard.flush()
                self._run_periodic()
            if now >= next_presence:
                next_presence = now + PRESENCE_EVERY
                self.record_presence()
            stop.wait(self.interval)
        if stop.is_set():
            return
        self.following = False
        logger.warning(
            "the parent process (pid %d) stopped updating the maintenance state; "
            "this process now watches Redis itself",
            feed.owner_pid,
            extra={"mg_event": "feed_stale"},
        )
        super()._watch()
