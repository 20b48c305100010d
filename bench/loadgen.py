"""HTTP load for the status benchmark: wrk when available, else a Python fallback.

`find_wrk` installs Debian's wrk when it is missing and apt-get can (root); otherwise the
saturating fallback holds the same number of keep-alive connections with threads and
``http.client`` (it saturates the client long before a fast server; the table says which
tool produced the figures). `run_open_loop` is the fixed-rate load for latency.
"""

from __future__ import annotations

import asyncio
import http.client
import math
import os
import random
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass

from .common import note, percentile


@dataclass
class Load:
    """What one load run measured."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def find_wrk() -> str | None:
    """Path of wrk, installing Debian's package if possible."""
    found = shutil.which("wrk")
    if found or not shutil.which("apt-get") or os.geteuid() != 0:
        return found
    note("wrk missing: apt-get install -y wrk")
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "wrk"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=180,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return shutil.which("wrk")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"not a wrk latency: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk_duration(seconds: float) -> str:
    """wrk's ``-d`` value: whole seconds only (``-d 1.5s`` is an error), rounded up."""
    return f"{max(1, math.ceil(seconds))}s"


def run_wrk(wrk: str, url: str, connections: int, seconds: float) -> Load:
    out = subprocess.run(
        [wrk, "-t", "2", "-c", str(connections), "-d", wrk_duration(seconds), "--latency", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses:\s+(\d+)", r"Socket errors:.*?timeout (\d+)"):
        match = re.search(pattern, out)
        if match:
            errors += int(match.group(1))
    return Load(rate, p50, p99, errors)


def run_python(host: str, port: int, path: str, connections: int, seconds: float) -> Load:
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0]
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        mine = latencies[i]
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors[0] += 1
            except (OSError, http.client.HTTPException):
                errors[0] += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
                continue
            mine.append((time.perf_counter() - started) * 1000)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - began
    flat = [x for per in latencies for x in per]
    return Load(len(flat) / took, percentile(flat, 50), percentile(flat, 99), errors[0])


def run_open_loop(
    host: str, port: int, path: str, connections: int, rate: float, seconds: float
) -> Load:
    """Requests arriving at random (Poisson) at ``rate`` per second over ``connections``
    keep-alive connections; latency counts from the scheduled arrival, so time spent
    waiting for a free connection is included (no coordinated omission)."""
    return asyncio.run(_open_loop(host, port, path, connections, rate, seconds))


async def _open_loop(
    host: str, port: int, path: str, connections: int, rate: float, seconds: float
) -> Load:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await asyncio.open_connection(host, port))
    latencies: list[float] = []
    errors = 0

    async def one(scheduled: float) -> None:
        nonlocal errors
        reader, writer = await idle.get()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            latencies.append((loop.time() - scheduled) * 1000)
        except (OSError, asyncio.IncompleteReadError, AttributeError):
            errors += 1
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
        idle.put_nowait((reader, writer))

    loop = asyncio.get_running_loop()
    rng = random.Random(7)
    began = loop.time()
    arrival = began
    tasks = []
    while arrival < began + seconds:
        arrival += rng.expovariate(rate)
        delay = arrival - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(arrival)))
    await asyncio.gather(*tasks)
    took = loop.time() - began
    while not idle.empty():
        idle.get_nowait()[1].close()
    return Load(len(latencies) / took, percentile(latencies, 50), percentile(latencies, 99), errors)
