"""Worker cost per task while the guard's state Redis hangs (SIGSTOP: connections are
accepted, nothing answers) against the same worker while it answers.

One guarded prefork worker (2 processes) whose state store is a private redis-server of
this benchmark; the broker and the batch markers are on the benchmark Redis. Each round
times a batch of no-op tasks with the state Redis answering, then one with it stopped,
back to back; the row is the median extra time per task. In-flight bookkeeping is
written by a background thread, so the task's own path must not wait on the hung Redis.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import redis

from maintenance_guard.embedded import redis_server_binary

from .bench_worker import Worker
from .common import cleaned, emit, median, note, parse_args, unique_prefix


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    args = parse_args(__doc__ or "")
    n = 100 if args.quick else 200
    port = _free_port()
    directory = tempfile.mkdtemp(prefix="mgbench-state-")
    server = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    state_url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            if redis.Redis.from_url(state_url).ping():
                break
        except redis.RedisError:
            time.sleep(0.05)
    prefix = unique_prefix("hung")
    os.environ["MGBENCH_PREFIX"] = prefix
    os.environ["MGBENCH_GUARDED"] = "0"  # this process publishes with the bare app
    os.environ["MGBENCH_STATE_URL"] = state_url
    staging = f"{prefix}-staging"
    added: list[float] = []
    ok_per_task: list[float] = []
    hung_per_task: list[float] = []
    try:
        with cleaned(prefix) as client:
            worker = Worker(True, prefix, client)
            try:
                worker.batch(0, staging)
                worker.batch(n // 4, staging)  # warm
                for r in range(args.rounds):
                    ok = 1 / worker.batch(n, staging)
                    server.send_signal(signal.SIGSTOP)
                    try:
                        hung = 1 / worker.batch(n, staging)
                    finally:
                        server.send_signal(signal.SIGCONT)
                    ok_per_task.append(ok)
                    hung_per_task.append(hung)
                    added.append(hung - ok)
                    note(
                        f"hung-state round {r + 1}: {ok * 1e3:.2f} ms a task answering, "
                        f"{hung * 1e3:.2f} ms hung, +{(hung - ok) * 1e3:.2f} ms"
                    )
                    time.sleep(1.0)  # let the worker catch up before the next round
            finally:
                worker.stop()
                client.delete(staging)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(directory, ignore_errors=True)
    extra_ms = median(added) * 1e3
    emit(
        "worker cost per task while the state Redis hangs",
        "same worker, state Redis answering",
        f"+{extra_ms:.2f} ms a task ({median(hung_per_task) * 1e3:.2f} vs "
        f"{median(ok_per_task) * 1e3:.2f} ms, {n} no-op tasks, prefork -c 2)",
        "< 5 ms added",
        extra_ms < 5.0,
        rounds=args.rounds,
        tasks_per_batch=n,
        added_ms=[a * 1e3 for a in added],
    )


if __name__ == "__main__":
    main()
