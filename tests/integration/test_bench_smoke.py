"""The benchmark harness still runs: `bench/run --quick --only is_blocked` prints its table.

Only the shape is checked, never a timing (speed belongs to bench/, not to tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
