"""Fleet-size costs: many guard instances against one Redis.

Runs ``--sizes`` (default 1,000; ``--sizes 1000,5000`` on a machine with the cores for it)
guard instances, ``PER_PROCESS`` to an OS
process, each instance a `MaintenanceGuard` with its own watcher exactly as one web or
worker process has, against a private redis-server started for the run (``maxclients``
raised so 5,000 instances fit). For each size it prints, per instance: Redis connections
(``CLIENT LIST``), idle round trips a second (commands the clients sent, counted with
``MONITOR``: commands a script runs inside Redis are not round trips), Redis' CPU while
idle, and the propagation of `enable`/`disable` to every instance (from the call's
start to each instance installing the new version; p50/p99/max over all instances and
rounds).

Redis' part of that propagation alone, with no client CPU in it, is measured apart
(`bench.fanout`: one PUBLISH to 1,000 and 5,000 plain subscriber sockets).

A second part runs one real prefork Celery worker (``-c 4``) with the guard installed
and counts its connections and idle round trips per OS process: the pool processes
follow their parent's state through shared memory (`maintenance_guard.feed`).

Usage: python -m bench.bench_fleet [--rounds N] [--quick] [--sizes 1000[,5000]]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from maintenance_guard import MaintenanceGuard
from maintenance_guard.embedded import redis_server_binary

from .common import ROOT, emit, median, note, percentile, start_bench_worker, unique_prefix
from .fanout import measure_fanout

PER_PROCESS = 50
STARTING_AT_ONCE = 10  # instance processes started together (a start is CPU-heavy)
IDLE_SECONDS = 10.0
SETTLE_SECONDS = 4.0
MAX_CONNECTIONS = 2  # per process
MAX_IDLE_ROUND_TRIPS = 1.0  # per process and second
PROPAGATION_P99_MS = 100.0  # to 1,000 instances
CORES = os.cpu_count() or 1
MONITOR_LINE = re.compile(r'^\+?[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of the run's own on a loopback port; stopped afterwards."""
    port = free_port()
    proc = subprocess.Popen(
        [
            redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--maxclients", "16000",
            "--logfile", "", "--loglevel", "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()  # not counted among the fleet's connections
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


# ---------------------------------------------------------------- instance processes


def run_instances(url: str, prefix: str, count: int) -> None:
    """Child: ``count`` guards; answers ``seen VERSION`` lines on stdout (see `Fleet`).

    Niced: thousands of instances share this machine's cores with the one Redis they
    measure, which in a real fleet has its own; Redis must not starve behind them."""
    os.nice(10)
    seen: dict[int, list[float]] = {}
    lock = threading.Lock()

    def listener(status: Any) -> None:
        stamp = time.time()
        with lock:
            seen.setdefault(status.version, []).append(stamp)

    guards = []
    for _ in range(count):
        guard = MaintenanceGuard.from_url(url, key_prefix=prefix)
        guard.add_listener(listener)  # starts the watcher
        guards.append(guard)
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "seen":
            version = int(arg)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                with lock:
                    if len(seen.get(version, [])) >= count:
                        break
                time.sleep(0.01)
            with lock:
                print(json.dumps(seen.get(version, [])), flush=True)
        elif command == "quit":
            break
    for guard in guards:
        guard.stop(timeout=0.1)


class Fleet:
    """``size`` instances over ``size / PER_PROCESS`` child processes."""

    def __init__(self, url: str, prefix: str, size: int) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self._ready = 0
        self.size = size
        left = size
        while left > 0:
            if len(self.procs) % STARTING_AT_ONCE == 0:
                self._wait_ready()
            count = min(PER_PROCESS, left)
            left -= count
            self.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.bench_fleet",
                        "--instances",
                        url,
                        prefix,
                        str(count),
                    ],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )  # fmt: skip
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        for proc in self.procs[self._ready :]:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("an instance process did not start")
        self._ready = len(self.procs)

    def cpu_seconds(self) -> float:
        """User + system CPU the instance processes have used so far."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for proc in self.procs:
            with open(f"/proc/{proc.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def seen(self, version: int) -> list[float]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(f"seen {version}\n")
            proc.stdin.flush()
        stamps: list[float] = []
        for proc in self.procs:
            assert proc.stdout is not None
            stamps.extend(json.loads(proc.stdout.readline()))
        return stamps

    def close(self) -> None:
        for proc in self.procs:
            try:
                assert proc.stdin is not None
                proc.stdin.write("quit\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


# ---------------------------------------------------------------- measuring Redis


def count_round_trips(url: str, seconds: float) -> tuple[Counter[str], Counter[str], float]:
    """Commands sent by clients during ``seconds`` (MONITOR; script-internal commands
    excluded): by client address and by command name; and Redis' CPU seconds used."""
    client = redis.Redis.from_url(url)
    try:
        monitor_conn = client.connection_pool.get_connection()
    except TypeError:  # redis-py before 6 wants a command name
        monitor_conn = client.connection_pool.get_connection("MONITOR")
    by_client: Counter[str] = Counter()
    by_command: Counter[str] = Counter()
    cpu_before = _cpu(client)
    monitor_conn.send_command("MONITOR")
    monitor_conn.read_response()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not monitor_conn.can_read(timeout=0.2):
            continue
        line = monitor_conn.read_response()
        if isinstance(line, bytes):
            line = line.decode(errors="replace")
        match = MONITOR_LINE.match(str(line))
        if match is None or match.group(1) == "lua":
            continue
        by_client[match.group(1)] += 1
        by_command[match.group(2).lower()] += 1
    cpu = _cpu(client) - cpu_before
    monitor_conn.disconnect()
    client.close()
    return by_client, by_command, cpu


def _cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def clients_of(url: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(url)
    try:
        return [c for c in client.client_list() if c.get("cmd") != "client"]
    finally:
        client.close()


# ---------------------------------------------------------------- the parts


def measure_size(url: str, size: int, rounds: int) -> dict[str, Any]:
    prefix = unique_prefix("fleet")
    note(f"fleet: starting {size} instances ...")
    started = time.monotonic()
    fleet = Fleet(url, prefix, size)
    try:
        note(f"fleet: {size} instances up in {time.monotonic() - started:.1f} s; idle ...")
        time.sleep(SETTLE_SECONDS)
        connections = len(clients_of(url))
        # CPU first, without MONITOR (which makes Redis format every command for it).
        probe = redis.Redis.from_url(url)
        client_cpu, cpu = fleet.cpu_seconds(), _cpu(probe)
        time.sleep(IDLE_SECONDS)
        client_cpu, cpu = fleet.cpu_seconds() - client_cpu, _cpu(probe) - cpu
        probe.close()
        by_client, by_command, _monitored_cpu = count_round_trips(url, IDLE_SECONDS)
        trips = sum(by_client.values()) / IDLE_SECONDS
        admin = MaintenanceGuard.from_url(url, key_prefix=prefix)
        latencies: list[float] = []
        missing = 0
        changes_cpu, changes_began = fleet.cpu_seconds(), time.monotonic()
        for i in range(rounds * 2):
            time.sleep(0.5)
            t0 = time.time()
            if i % 2 == 0:
                status = admin.enable("normal", reason="fleet bench", by="bench")
            else:
                status = admin.disable(by="bench")
            stamps = fleet.seen(status.version)
            missing += size - len(stamps)
            latencies.extend((s - t0) * 1000 for s in stamps)
        changes_cpu = fleet.cpu_seconds() - changes_cpu
        # The instances' CPU for receiving and installing a change: what the rounds used
        # beyond the idle rate measured above (polls go on meanwhile).
        idle_rate = client_cpu / IDLE_SECONDS
        change_cpu = changes_cpu - idle_rate * (time.monotonic() - changes_began)
        admin.stop(timeout=0.1)
        return {
            "size": size,
            "processes": len(fleet.procs),
            "connections": connections,
            "connections_per_instance": connections / size,
            "round_trips_per_instance": trips / size,
            "commands": dict(by_command.most_common(8)),
            "redis_cpu_percent": 100 * cpu / IDLE_SECONDS,
            "client_cpu_us_per_instance_second": 1e6 * client_cpu / IDLE_SECONDS / size,
            "change_cpu_us_per_instance": 1e6 * change_cpu / (rounds * 2) / size,
            "propagation_ms": {
                "p50": median(latencies) if latencies else float("nan"),
                "p99": percentile(latencies, 99),
                "max": max(latencies) if latencies else float("nan"),
            },
            "missing": missing,
        }
    finally:
        fleet.close()
        cleanup = redis.Redis.from_url(url)
        for key in cleanup.scan_iter(match=f"{{{prefix}}}:*"):
            cleanup.delete(key)
        cleanup.close()


def measure_prefork(url: str) -> dict[str, Any]:
    """One prefork worker, -c 4, idle: connections and round trips per OS process."""
    prefix = unique_prefix("fleet-prefork")
    env = dict(os.environ, MGBENCH_GUARDED="1", MGBENCH_PREFIX=prefix, MGBENCH_STATE_URL=url)
    # The broker is the benchmark Redis (not the private one), so only the guard counts.
    worker = start_bench_worker(f"{prefix}-default", f"{prefix}@bench", 4, env)
    try:
        time.sleep(8)
        processes = 5
        connections = len(clients_of(url))
        by_client, by_command, _cpu_s = count_round_trips(url, IDLE_SECONDS)
        return {
            "processes": processes,
            "connections": connections,
            "round_trips_per_second": sum(by_client.values()) / IDLE_SECONDS,
            "commands": dict(by_command.most_common(8)),
        }
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        cleanup = redis.Redis.from_url(url)
        for key in cleanup.scan_iter(match=f"*{prefix}*"):
            cleanup.delete(key)
        cleanup.close()


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--instances":
        run_instances(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default="")
    args = parser.parse_args()
    # 5,000 instances need about 3 cores of guard CPU while idle (0.6 ms a poll each):
    # more than a 2-core machine has beside the Redis it measures. Ask for them with
    # --sizes 1000,5000 on a bigger one.
    sizes = [int(s) for s in args.sizes.split(",") if s] or [1000]
    rounds = 2 if args.quick else args.rounds
    results = []
    fanouts = []
    with private_redis() as url:
        prefork = measure_prefork(url)
        note(f"fleet: prefork -c 4: {prefork}")
        # Redis' part alone, to 1,000 and 5,000 plain subscriptions (no client CPU).
        for size in sorted({*sizes, 1000, 5000}):
            fanouts.append(measure_fanout(url, size, rounds * 2))
            note(f"fleet: fan-out {json.dumps(fanouts[-1])}")
        for size in sizes:
            result = measure_size(url, size, rounds)
            note(f"fleet: {json.dumps(result)}")
            results.append(result)
    per_process_conn = prefork["connections"] / prefork["processes"]
    per_process_trips = prefork["round_trips_per_second"] / prefork["processes"]
    parts = [
        f"prefork -c 4 idle: {prefork['connections']} connections for 5 processes "
        f"({per_process_conn:.1f} each), {per_process_trips:.2f} round trips/s each"
    ]
    met = per_process_conn <= MAX_CONNECTIONS and per_process_trips <= MAX_IDLE_ROUND_TRIPS
    for r in results:
        p = r["propagation_ms"]
        parts.append(
            f"{r['size']:,} instances ({r['processes']} OS processes): "
            f"{r['connections_per_instance']:.2f} connections and "
            f"{r['round_trips_per_instance']:.2f} idle round trips/s each, "
            f"Redis CPU {r['redis_cpu_percent']:.0f}% idle, guard CPU "
            f"{r['client_cpu_us_per_instance_second']:.0f} us/s per instance idle and "
            f"{r['change_cpu_us_per_instance']:.0f} us per instance for each change "
            f"({r['change_cpu_us_per_instance'] * r['size'] / 1000 / CORES:.0f} ms of all "
            f"{CORES} cores); "
            f"propagation p50 {p['p50']:.0f} ms, "
            f"p99 {p['p99']:.0f} ms, max {p['max']:.0f} ms"
            + (f", {r['missing']} not seen" if r["missing"] else "")
        )
        met = met and r["connections_per_instance"] <= MAX_CONNECTIONS
        met = met and r["round_trips_per_instance"] <= MAX_IDLE_ROUND_TRIPS
        met = met and not r["missing"]
        if r["size"] <= 1000:
            met = met and p["p99"] < PROPAGATION_P99_MS
    parts.append(
        "Redis' fan-out of one notification to plain subscriptions (no client CPU): "
        + ", ".join(
            f"{f['size']:,} p99 {f['p99_ms']:.0f} ms (p50 {f['p50_ms']:.0f})" for f in fanouts
        )
    )
    emit(
        "fleet size: Redis cost per process and propagation",
        "targets per process (an instance is one process's guard)",
        "; ".join(parts),
        f"<= {MAX_CONNECTIONS} connections and <= {MAX_IDLE_ROUND_TRIPS:g} idle round trip/s "
        f"per process; propagation p99 < {PROPAGATION_P99_MS:g} ms to 1,000",
        met,
        prefork=prefork,
        sizes=results,
        fanout=fanouts,
    )


if __name__ == "__main__":
    main()
