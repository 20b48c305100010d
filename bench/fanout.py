"""Redis' own part of propagation: one notification fanned out to N subscriptions.

`bench_fleet` times propagation end to end, from `enable` to every guard instance having
installed the change; on a machine with fewer cores than the fleet has, that figure is
the instances' CPU queueing behind each other, not the fleet's. This part measures what
the fleet would see with a core per process: ``size`` plain subscriber connections (raw
sockets: no client code runs between messages) on one channel, one PUBLISH of a payload
the size of a real change notification, and the time until each connection has received
the whole message. One thread reads them all through epoll, so the figure is an upper
bound (it includes reading the sockets one after another).
"""

from __future__ import annotations

import selectors
import socket
import time
import uuid
from typing import Any
from urllib.parse import urlparse

import redis

from .common import median, percentile

PAYLOAD_BYTES = 600  # a change notification carrying the state is about 0.5 KB


def _command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _message_bytes(channel: str, payload: bytes) -> int:
    """Length of the RESP2 push a subscriber receives for one message."""
    parts = [b"message", channel.encode(), payload]
    return len(b"*3\r\n") + sum(len(b"$%d\r\n" % len(p)) + len(p) + 2 for p in parts)


def _subscribe_all(host: str, port: int, channel: str, size: int) -> list[socket.socket]:
    subscribe = _command("SUBSCRIBE", channel)
    confirmation = (
        len(b"*3\r\n$9\r\nsubscribe\r\n")
        + len(b"$%d\r\n" % len(channel))
        + len(channel)
        + 2
        + len(b":1\r\n")
    )
    socks = []
    for _ in range(size):
        sock = socket.create_connection((host, port))
        sock.sendall(subscribe)
        socks.append(sock)
    for sock in socks:
        got = b""
        while len(got) < confirmation:
            got += sock.recv(confirmation - len(got))
        sock.setblocking(False)
    return socks


def measure_fanout(url: str, size: int, rounds: int) -> dict[str, Any]:
    """Publish ``rounds`` times to ``size`` raw subscriptions; ms from the PUBLISH to
    each subscription's whole message (p50/p99/max over all rounds)."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    channel = f"mgbench-fanout-{uuid.uuid4().hex[:12]}"
    payload = b"x" * PAYLOAD_BYTES
    expected = _message_bytes(channel, payload)
    socks = _subscribe_all(host, port, channel, size)
    selector = selectors.DefaultSelector()
    socks_by_fd = {sock.fileno(): sock for sock in socks}
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    publisher = redis.Redis.from_url(url)
    latencies: list[float] = []
    receivers: list[int] = []
    try:
        for _ in range(rounds):
            time.sleep(0.2)
            left = {sock.fileno(): expected for sock in socks}
            started = time.perf_counter()
            receivers.append(int(publisher.publish(channel, payload)))
            deadline = started + 10
            while left and time.perf_counter() < deadline:
                for key, _ in selector.select(timeout=1):
                    fd = key.fd
                    sock = socks_by_fd[fd]
                    if fd not in left:
                        continue
                    left[fd] -= len(sock.recv(65536))
                    if left[fd] <= 0:
                        del left[fd]
                        latencies.append((time.perf_counter() - started) * 1000)
            if left:
                raise RuntimeError(f"{len(left)} of {size} subscriptions got no message")
    finally:
        publisher.close()
        selector.close()
        for sock in socks:
            sock.close()
    return {
        "size": size,
        "receivers": min(receivers),
        "payload_bytes": PAYLOAD_BYTES,
        "p50_ms": median(latencies),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
    }
