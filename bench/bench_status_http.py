"""The status endpoint under 200 connections against a bare Flask JSON endpoint served by
the same server (gunicorn, gthread), maintenance on, alternating endpoints each round.

Two loads: wrk saturating the server (throughput ratio, and p99 that is then mostly
queueing: 200 requests in flight on 2 cores), and requests arriving at random at a fixed
1,000 req/s over the same 200 keep-alive connections (200 status pollers at 5/s each), for
the latency p99 (`loadgen.run_open_loop`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

from maintenance_guard import MaintenanceGuard, MaintenanceMode

from .common import ROOT, cleaned, emit, median, note, parse_args, redis_url, unique_prefix
from .loadgen import Load, find_wrk, run_open_loop, run_python, run_wrk

CONNECTIONS = 200
FIXED_RATE = 1000.0  # requests/s for the latency load
STATUS_PATH = "/api/maintenance/status"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the benchmark server did not start")
        time.sleep(0.1)


def combine(loads: list[Load]) -> Load:
    """Several equal-length loads as one: mean rate, worst p99, median p50."""
    return Load(
        sum(x.requests_per_s for x in loads) / len(loads),
        median([x.p50_ms for x in loads]),
        max(x.p99_ms for x in loads),
        sum(x.errors for x in loads),
    )


def main() -> None:
    args = parse_args(__doc__ or "")
    seconds, pairs = (1.5, 1) if args.quick else (2.0, 3)
    prefix = unique_prefix("http")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    wrk = find_wrk()
    tool = "wrk -t2 -c200" if wrk else "Python fallback (threads, http.client keep-alive)"
    results: dict[str, list[Load]] = {
        "status": [],
        "bare": [],
        "status_fixed": [],
        "bare_fixed": [],
    }
    ratios: list[float] = []
    with cleaned(prefix):
        guard = MaintenanceGuard.from_url(redis_url(), key_prefix=prefix)
        guard.enable(MaintenanceMode.NORMAL, reason="bench", by="bench")
        env = dict(os.environ)
        env["MGBENCH_PREFIX"] = prefix
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-k",
                "gthread",
                "-w",
                "2",
                "--threads",
                "16",
                "-b",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                "--backlog",
                "2048",
                "bench.http_app:app",
            ],
            cwd=ROOT,
            env=env,
        )
        try:
            wait_up(base + STATUS_PATH, server)
            with urllib.request.urlopen(base + STATUS_PATH, timeout=5) as response:
                if b'"is_active":true' not in response.read().replace(b" ", b""):
                    raise SystemExit("the status endpoint does not report maintenance")

            def load(path: str, duration: float) -> Load:
                if wrk:
                    return run_wrk(wrk, base + path, CONNECTIONS, duration)
                return run_python("127.0.0.1", port, path, CONNECTIONS, duration)

            load(STATUS_PATH, 1)  # warm-up
            load("/bare", 1)
            for r in range(args.rounds):
                order = ("status", "bare") if r % 2 == 0 else ("bare", "status")
                runs: dict[str, list[Load]] = {"status": [], "bare": []}
                for i in range(pairs):  # short alternating loads share the machine's noise
                    for name in order if i % 2 == 0 else order[::-1]:
                        path = STATUS_PATH if name == "status" else "/bare"
                        runs[name].append(load(path, seconds))
                got = {name: combine(loads) for name, loads in runs.items()}
                for name, value in got.items():
                    results[name].append(value)
                ratios.append(got["status"].requests_per_s / got["bare"].requests_per_s)
                for name in order:
                    path = STATUS_PATH if name == "status" else "/bare"
                    fixed = run_open_loop(
                        "127.0.0.1", port, path, CONNECTIONS, FIXED_RATE, seconds * 2
                    )
                    results[f"{name}_fixed"].append(fixed)
                note(
                    f"http round {r + 1}: status {got['status'].requests_per_s:.0f}/s "
                    f"p99 {got['status'].p99_ms:.1f} ms, bare {got['bare'].requests_per_s:.0f}/s "
                    f"p99 {got['bare'].p99_ms:.1f} ms"
                )
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
            guard.disable(by="bench")
            guard.stop(timeout=2)
    ratio = median(ratios)
    p99 = median([x.p99_ms for x in results["status"]])
    bare_p99 = median([x.p99_ms for x in results["bare"]])
    errors = sum(x.errors for runs in results.values() for x in runs)
    fixed_p99 = median([x.p99_ms for x in results["status_fixed"]])
    fixed_bare = median([x.p99_ms for x in results["bare_fixed"]])
    fixed = (
        f"; p99 at a fixed {FIXED_RATE:.0f} req/s (random arrivals) over the same "
        f"{CONNECTIONS} connections: {fixed_p99:.1f} ms = {fixed_p99 / fixed_bare:.2f}x the "
        f"bare endpoint's {fixed_bare:.1f} ms"
    )
    emit(
        f"status endpoint, {CONNECTIONS} connections",
        "bare Flask JSON endpoint, same server",
        f"ratio {ratio:.2f} ({median([x.requests_per_s for x in results['status']]):.0f} vs "
        f"{median([x.requests_per_s for x in results['bare']]):.0f} req/s, saturated by {tool}: "
        f"p99 then {p99:.0f} ms, bare {bare_p99:.0f} ms){fixed}; gunicorn gthread 2x16"
        + (f"; {errors} errors" if errors else ""),
        "ratio >= 0.8, p99 <= 2x bare",
        ratio >= 0.8 and fixed_p99 <= 2 * fixed_bare,
        rounds=args.rounds,
        seconds_per_load=seconds,
        tool=tool,
        ratios=ratios,
        **{name: [vars(x) for x in runs] for name, runs in results.items()},
    )


if __name__ == "__main__":
    main()
