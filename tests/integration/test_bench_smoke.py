"""The benchmark harness still runs: `bench/run --quick --only is_blocked` prints its table.

Only the shape is checked, never a timing (speed belongs to bench/, not to tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_run_quick_prints_the_table_with_the_is_blocked_row(redis_url: str) -> None:
    env = dict(os.environ, REDIS_URL=redis_url)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run"), "--quick", "--only", "is_blocked"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "| benchmark | measured against | result | target | met? |" in lines
    rows = [line for line in lines if line.startswith("| guard check on the hot path")]
    assert len(rows) == 1, proc.stdout
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == "a dict lookup"
    assert "µs" in cells[2] and "ns" in cells[2]
    assert cells[3] == "< 2 µs"
    assert cells[4] in ("yes", "**NO**")


def test_bench_run_refuses_an_unknown_benchmark_name_with_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run"), "--only", "nonsense"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown benchmark nonsense" in proc.stderr
    assert "| benchmark |" not in proc.stdout


def test_wrk_is_given_whole_seconds_which_is_all_it_accepts() -> None:
    import shutil

    from bench.loadgen import wrk_duration

    assert [wrk_duration(s) for s in (0.2, 1.0, 1.5, 2.0)] == ["1s", "1s", "2s", "2s"]
    wrk = shutil.which("wrk")
    if wrk is None:
        return  # where wrk is installed, check that it really takes the value
    done = subprocess.run(
        [wrk, "-t", "1", "-c", "1", "-d", wrk_duration(1.5), "http://127.0.0.1:9/"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "Usage: wrk" not in done.stdout + done.stderr


def test_the_session_row_reads_the_guard_and_the_baseline_seconds_of_a_run() -> None:
    from bench.wrap_sessions import parse_run

    out = (
        "guard: invalidated 90000 (non-admin), kept 10000 admin\n"
        "order:                 baseline then guard\n"
        "seconds:               2.268\n"
        "baseline seconds:      2.305  (SCAN + pipelined GET + UNLINK)\n"
        "ratio:                 0.98\n"
    )
    assert parse_run(out) == (2.268, 2.305)
    with pytest.raises(ValueError):
        parse_run("seconds:               2.268\n")  # an older script: no baseline


def test_the_emergency_row_reads_both_paths_celery_s_own_revoke_and_the_poll() -> None:
    from bench.wrap_emergency import parse_summary

    out = (
        "SIGTERM (grace end -> last job gone): 4 jobs, runs=8: median 0.373s, max 0.405s "
        "(0.331, 0.405)\n"
        "celery revoke(terminate=True), inspect().stats() every 0.050s: median 0.374s, "
        "max 0.379s; ratio median 1.00\n"
        "SIGKILL after kill_after=1s (includes the 1 s wait): 4 jobs, runs=8: median 1.393s, "
        "max 1.440s (1.372, 1.440)\n"
        "poll interval: 0.050s\n"
    )
    assert parse_summary(out) == {
        "SIGTERM": (0.373, 0.405),
        "celery": (0.374, 0.379, 1.0),
        "SIGKILL": (1.393, 1.44),
        "poll": 0.05,
    }
