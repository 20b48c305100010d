"""The status endpoint under 200 concurrent connections (gunicorn gthread, real HTTP).

A thread-per-connection load generator opens 200 connections at once, several rounds, while
maintenance is switched on and off underneath. Every answer must be a 200 with the contract
JSON; the numbers (requests, throughput) are recorded as junit properties, not asserted.
A flood of status streams (more than all the threads) is held at the stream cap while
ordinary requests keep answering.
"""

from __future__ import annotations

import http.client as httpclient
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from maintenance_guard import MaintenanceGuard
from tests.conftest import ROOT
from tests.e2e.flask_support import SSEReader, http
from tests.helpers import free_port, wait_for

CONNECTIONS = 200
ROUNDS = 5
CONTRACT_KEYS = {
    "is_active",
    "mode",
    "reason",
    "estimated_duration",
    "started_at",
    "estimated_completion",
    "blocked_operations",
    "message",
    "active_jobs_count",
}


@pytest.fixture
def gunicorn_url(cli_env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--worker-class",
            "gthread",
            "--workers",
            "2",  # two forked workers, each must follow every switch
            "--threads",
            "32",
            "--backlog",
            "2048",
            "--graceful-timeout",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "tests.e2e.flask_support:gunicorn_app()",
        ],
        cwd=ROOT,
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, "gunicorn exited"
            try:
                return http("GET", url + "/", timeout=2)[0] == 200
            except OSError:
                return False

        wait_for(up, timeout=60, interval=0.1)
        yield url
    finally:
        # The whole process group: a worker that outlived its master would keep writing
        # to the test's keys after they are cleaned up.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


@pytest.mark.slow
def test_status_endpoint_answers_200_concurrent_connections_without_errors_across_switches(
    gunicorn_url: str,
    guard: MaintenanceGuard,
    record_property: Callable[[str, object], None],
) -> None:
    port = int(gunicorn_url.rsplit(":", 1)[1])
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    # The state each round runs under, switched between rounds while the clients wait.
    plan = ["off", "normal", "normal", "off", "emergency"]
    assert len(plan) == ROUNDS
    current = {"round": 0}

    def everyone_sees(active: bool) -> bool:
        answers = [http("GET", gunicorn_url + "/api/maintenance/status")[2] for _ in range(8)]
        return all(json.loads(a)["is_active"] is active for a in answers)

    def switch_for_next_round() -> None:
        current["round"] += 1
        if current["round"] >= ROUNDS:
            return
        wanted = plan[current["round"]]
        if wanted == "off":
            guard.disable(by="ops")
        else:
            guard.enable(wanted, reason="under load", by="ops")
        wait_for(lambda: everyone_sees(wanted != "off"), timeout=10)

    barrier = threading.Barrier(CONNECTIONS, action=switch_for_next_round, timeout=120)

    def client() -> None:
        for round_ in range(ROUNDS):
            expected = "off" if plan[round_] == "off" else "on"
            try:
                conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", "/api/maintenance/status")
                response = conn.getresponse()
                body = response.read()
                conn.close()
                data = json.loads(body)
                outcome = f"{response.status}:{'on' if data.get('is_active') else 'off'}"
                ok = outcome == f"200:{expected}" and CONTRACT_KEYS <= set(data)
            except Exception as exc:
                ok, outcome = False, f"error:{type(exc).__name__}"
            with lock:
                outcomes[outcome] += 1
                if not ok and len(failures) < 10:
                    failures.append(f"round {round_}: {outcome}")
            barrier.wait()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CONNECTIONS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.monotonic() - started

    total = sum(outcomes.values())
    assert total == CONNECTIONS * ROUNDS
    assert not failures, (failures, outcomes)
    assert outcomes["200:on"] == 3 * CONNECTIONS and outcomes["200:off"] == 2 * CONNECTIONS
    record_property("status_requests", total)
    record_property("status_requests_per_second", round(total / elapsed, 1))


STREAMS = 80  # more than the two workers' 64 threads together
NORMAL_REQUESTS = 300
NORMAL_CLIENTS = 24
STREAM_CAP = 8  # the default MAINTENANCE_GUARD_SSE_MAX_CLIENTS, per process


@pytest.mark.slow
def test_normal_requests_keep_answering_while_a_flood_of_status_streams_is_held_at_the_cap(
    gunicorn_url: str,
    guard: MaintenanceGuard,
    record_property: Callable[[str, object], None],
) -> None:
    port = int(gunicorn_url.rsplit(":", 1)[1])
    held: list[SSEReader] = []
    refused: list[str] = []
    starved: list[str] = []
    lock = threading.Lock()

    def open_stream() -> None:
        try:
            reader = SSEReader(f"{gunicorn_url}/api/maintenance/stream", timeout=20)
        except (OSError, EOFError) as exc:  # no thread ever answered
            with lock:
                starved.append(type(exc).__name__)
            return
        with lock:
            if " 200 " in reader.status_line:
                held.append(reader)
            else:
                refused.append(reader.headers)
                reader.close()

    openers = [threading.Thread(target=open_stream, daemon=True) for _ in range(STREAMS)]
    for t in openers:
        t.start()
    for t in openers:
        t.join(60)
    try:
        assert not starved, f"{len(starved)} stream requests got no answer at all"
        assert len(held) + len(refused) == STREAMS
        assert STREAM_CAP <= len(held) <= 2 * STREAM_CAP, len(held)
        assert all(" 429 " in h.split("\r\n", 1)[0] for h in refused)
        assert all("retry-after:" in h.lower() for h in refused)
        for reader in held:  # every held stream really streams: the current state first
            reader.sock.settimeout(10)
            assert reader.next_event()["is_active"] is False

        # With the streams held, ordinary requests (reads, the status API, a refused write)
        # all answer, within a generous client timeout.
        guard.enable("normal", reason="streams held")

        def everyone_sees_it() -> bool:
            answers = [http("GET", gunicorn_url + "/api/maintenance/status")[2] for _ in range(8)]
            return all(json.loads(a)["is_active"] for a in answers)

        wait_for(everyone_sees_it, timeout=10)
        outcomes: Counter[str] = Counter()
        latencies: list[float] = []
        paths = [("GET", "/api/items"), ("GET", "/api/maintenance/status"), ("POST", "/api/jobs")]
        jobs = list(range(NORMAL_REQUESTS))

        def client() -> None:
            while True:
                with lock:
                    if not jobs:
                        return
                    n = jobs.pop()
                method, path = paths[n % len(paths)]
                started = time.monotonic()
                try:
                    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=30)
                    conn.request(method, path)
                    response = conn.getresponse()
                    response.read()
                    conn.close()
                    outcome = f"{method} {path} {response.status}"
                except Exception as exc:
                    outcome = f"{method} {path} error:{type(exc).__name__}"
                with lock:
                    outcomes[outcome] += 1
                    latencies.append(time.monotonic() - started)

        workers = [threading.Thread(target=client, daemon=True) for _ in range(NORMAL_CLIENTS)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(120)
        expected = {"GET /api/items 200", "GET /api/maintenance/status 200", "POST /api/jobs 503"}
        assert set(outcomes) == expected, outcomes
        assert sum(outcomes.values()) == NORMAL_REQUESTS
        # Every held stream saw the switch too.
        for reader in held:
            assert reader.next_event()["is_active"] is True
    finally:
        for reader in held:
            reader.close()
    latencies.sort()
    record_property("streams_held", len(held))
    record_property("streams_refused_429", len(refused))
    record_property("normal_p50_ms", round(1000 * latencies[len(latencies) // 2], 1))
    record_property("normal_p99_ms", round(1000 * latencies[int(len(latencies) * 0.99)], 1))
    record_property("normal_max_ms", round(1000 * latencies[-1], 1))
