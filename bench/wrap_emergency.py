"""Table row for the emergency benchmark: runs the emergency owner's
``bench/bench_emergency.py --runs N`` and reads its summary lines: median/max seconds from
the end of the grace period to the last job gone (SIGTERM and SIGKILL paths), the same
for Celery's own ``revoke(terminate=True)`` on the same worker (until the processes have
left its pool, the physical limit: the worker restarts them, and answers nothing
meanwhile) with the median ratio of the SIGTERM runs, and the revocation's poll interval.
Judged by that ratio; the absolute figures are given in polls too."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from .common import ROOT, emit, note, parse_args

SCRIPT = ROOT / "bench" / "bench_emergency.py"
LINE = re.compile(r"^(SIGTERM|SIGKILL)[^:]*(?:\([^)]*\))?[^:]*:.*median ([\d.]+)s, max ([\d.]+)s")
POLL = re.compile(r"^poll interval: ([\d.]+)s")
CELERY = re.compile(r"^celery revoke[^:]*:.*median ([\d.]+)s, max ([\d.]+)s; ratio median ([\d.]+)")
KILL_AFTER = 1.0  # bench_emergency.py's kill_after on the SIGKILL path
TARGET_RATIO = 1.25


def parse_summary(stdout: str) -> dict[str, Any]:
    """``{"SIGTERM": (median, max), "SIGKILL": (median, max), "celery": (median, max,
    ratio), "poll": seconds}`` from the script's output (keys absent when their line is)."""
    found: dict[str, Any] = {}
    for line in stdout.splitlines():
        line = line.strip()
        if match := LINE.match(line):
            found[match.group(1)] = (float(match.group(2)), float(match.group(3)))
        elif match := POLL.match(line):
            found["poll"] = float(match.group(1))
        elif match := CELERY.match(line):
            found["celery"] = tuple(float(match.group(i)) for i in (1, 2, 3))
    return found


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
    for line in proc.stdout.splitlines():
        note(line)
    found = parse_summary(proc.stdout)
    if proc.returncode != 0 or not {"SIGTERM", "celery", "poll"} <= set(found):
        raise SystemExit(
            f"bench_emergency.py failed or printed no summary (exit {proc.returncode})"
        )
    poll = found["poll"]
    term_median, term_max = found["SIGTERM"]
    celery_median, _celery_max, ratio = found["celery"]
    text = (
        f"{ratio:.2f}x Celery's own (SIGTERM path: median {term_median * 1000:.0f} ms = "
        f"{term_median / poll:.1f} polls, max {term_max * 1000:.0f} ms; Celery's own "
        f"{celery_median * 1000:.0f} ms = {celery_median / poll:.1f} polls)"
    )
    if "SIGKILL" in found:
        beyond = found["SIGKILL"][0] - KILL_AFTER
        text += (
            f"; jobs ignoring SIGTERM (SIGKILL after kill_after=1 s): median kill_after + "
            f"{beyond * 1000:.0f} ms ({beyond / poll:.1f} polls)"
        )
    emit(
        "emergency: from end of grace period to last job gone",
        "Celery's revoke(terminate=True), same worker and jobs, until their processes "
        f"left the pool (inspect().stats() every {poll:.2f} s, the revocation's poll)",
        text + "; 4 jobs, prefork",
        f"median ratio <= {TARGET_RATIO}",
        ratio <= TARGET_RATIO,
        rounds=args.rounds,
        sigterm_median_s=term_median,
        sigterm_max_s=term_max,
        sigkill=found.get("SIGKILL"),
        celery=found["celery"],
        poll_s=poll,
    )


if __name__ == "__main__":
    main()
