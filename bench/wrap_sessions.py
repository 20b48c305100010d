"""Table row for the session benchmark: runs ``bench/bench_sessions.py`` (100,000
sessions, 10% admin) once per round, guard and plain SCAN + GET + UNLINK baseline on
identical fresh sets, the order alternating between rounds; reads the ``seconds:`` and
``baseline seconds:`` lines of each run. Median over rounds of guard / baseline."""

from __future__ import annotations

import re
import subprocess
import sys

from .common import ROOT, emit, median, note, parse_args

SCRIPT = ROOT / "bench" / "bench_sessions.py"
TARGET_RATIO = 1.25


def parse_run(stdout: str) -> tuple[float, float]:
    """(guard seconds, baseline seconds) from one run's output; ValueError if absent."""
    guard = re.search(r"^seconds:\s+([\d.]+)", stdout, re.M)
    baseline = re.search(r"^baseline seconds:\s+([\d.]+)", stdout, re.M)
    if guard is None or baseline is None:
        raise ValueError("no 'seconds:' and 'baseline seconds:' lines")
    return float(guard.group(1)), float(baseline.group(1))


def main() -> None:
    args = parse_args(__doc__ or "")
    if not SCRIPT.exists():
        raise SystemExit("bench/bench_sessions.py is missing")
    guard_s: list[float] = []
    baseline_s: list[float] = []
    ratios: list[float] = []
    for r in range(args.rounds):
        cmd = [sys.executable, str(SCRIPT), "--n", "100000"]
        if r % 2:
            cmd.append("--baseline-first")
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        try:
            guard, baseline = parse_run(proc.stdout)
        except ValueError:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
            raise SystemExit(f"bench_sessions.py failed (exit {proc.returncode}): {tail}") from None
        guard_s.append(guard)
        baseline_s.append(baseline)
        ratios.append(guard / baseline)
        note(f"sessions round {r + 1}: guard {guard:.3f} s, baseline {baseline:.3f} s")
    ratio = median(ratios)
    emit(
        "invalidate 100,000 sessions",
        "plain redis-py on an identical fresh set, same run: SCAN (same MATCH, COUNT 1000), "
        "pipelined GET, msgpack decode, pipelined UNLINK of each non-admin key",
        f"{ratio:.2f}x the baseline (guard median {median(guard_s):.2f} s, worst "
        f"{max(guard_s):.2f} s; baseline {median(baseline_s):.2f} s); 90,000 invalidated, "
        "10,000 admin kept",
        f"<= {TARGET_RATIO}x the baseline",
        ratio <= TARGET_RATIO,
        rounds=args.rounds,
        seconds=guard_s,
        baseline_seconds=baseline_s,
        ratios=ratios,
    )


if __name__ == "__main__":
    main()
