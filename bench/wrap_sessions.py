"""Table row for the session benchmark: runs the sessions owner's
``bench/bench_sessions.py`` (100,000 sessions, 10% admin) once per round and reads the
``seconds:`` line of each run; median over rounds."""

from __future__ import annotations

import re
import subprocess
import sys

from .common import ROOT, emit, median, note, parse_args

SCRIPT = ROOT / "bench" / "bench_sessions.py"


def main() -> None:
    args = parse_args(__doc__ or "")
    if not SCRIPT.exists():
        raise SystemExit("bench/bench_sessions.py is missing")
    seconds: list[float] = []
    rates: list[float] = []
    for r in range(args.rounds):
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--n", "100000"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            timeout=300,
        )
        match = re.search(r"^seconds:\s+([\d.]+)", proc.stdout, re.M)
        if proc.returncode != 0 or not match:
            raise SystemExit(f"bench_sessions.py failed (exit {proc.returncode})")
        seconds.append(float(match.group(1)))
        rate = re.search(r"^sessions/s:\s+([\d,]+)", proc.stdout, re.M)
        if rate:
            rates.append(float(rate.group(1).replace(",", "")))
        note(f"sessions round {r + 1}: {seconds[-1]:.3f} s")
    took = median(seconds)
    emit(
        "invalidate 100,000 sessions",
        "",
        f"median {took:.2f} s, worst {max(seconds):.2f} s "
        f"({3 / took:.1f}x under target; 90,000 invalidated, 10,000 admin kept)",
        "<= 3 s",
        took <= 3.0,
        rounds=args.rounds,
        seconds=seconds,
        sessions_per_s=rates,
    )


if __name__ == "__main__":
    main()
