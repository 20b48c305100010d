"""Table row for the emergency benchmark: runs the emergency owner's
``bench/bench_emergency.py --runs N`` and reads its summary lines (median/max seconds
from the end of the grace period to the last job gone, SIGTERM and SIGKILL paths)."""

from __future__ import annotations

import re
import subprocess
import sys

from .common import ROOT, emit, note, parse_args

SCRIPT = ROOT / "bench" / "bench_emergency.py"
LINE = re.compile(r"^(SIGTERM|SIGKILL)[^:]*(?:\([^)]*\))?[^:]*:.*median ([\d.]+)s, max ([\d.]+)s")


def main() -> None:
    args = parse_args(__doc__ or "")
    if not SCRIPT.exists():
        raise SystemExit("bench/bench_emergency.py is missing")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--runs", str(args.rounds)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        timeout=600,
    )
    found: dict[str, tuple[float, float]] = {}
    for line in proc.stdout.splitlines():
        note(line)
        match = LINE.match(line.strip())
        if match:
            found[match.group(1)] = (float(match.group(2)), float(match.group(3)))
    if proc.returncode != 0 or "SIGTERM" not in found:
        raise SystemExit(
            f"bench_emergency.py failed or printed no summary (exit {proc.returncode})"
        )
    term_median, term_max = found["SIGTERM"]
    text = f"SIGTERM path: median {term_median:.2f} s, max {term_max:.2f} s"
    if "SIGKILL" in found:
        text += (
            f"; jobs ignoring SIGTERM (SIGKILL after kill_after=1 s, wait included): "
            f"median {found['SIGKILL'][0]:.2f} s"
        )
    emit(
        "emergency: from end of grace period to last job gone",
        "",
        text + " (4 jobs, prefork)",
        "<= 1 s",
        term_median <= 1.0,
        rounds=args.rounds,
        sigterm_median_s=term_median,
        sigterm_max_s=term_max,
        sigkill=found.get("SIGKILL"),
    )


if __name__ == "__main__":
    main()
