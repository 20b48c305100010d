"""Short-lived producer processes (`python producer.py`): what they count and record
reaches the store when they exit, and a report does not call a window complete when a
process was killed before it could flush."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from maintenance_guard import MaintenanceGuard
from maintenance_guard.validation import build_test_report
from tests.conftest import ROOT
from tests.helpers import wait_for
from tests.integration.celery_support import redis_broker
from tests.reliability.fleet_app import conf

__all__ = ["conf", "redis_broker"]  # fixtures used by name

# A producer script as a shop writes one: build the app, submit, exit (maybe by crashing).
PRODUCER = """
import json, os, signal, sys
from tests.reliability.fleet_app import conf, sees, CAPTION, make_fleet_app
conf, attempts, how = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
app = make_fleet_app(**conf)
for i in range(attempts):
    try:
        app.tasks[CAPTION].delay(f"p{i}")
    except Exception as exc:
        if how == "raise":
            raise
if how == "kill":
    os.kill(os.getpid(), signal.SIGKILL)  # dies before any flush
"""


def _produce(conf: dict[str, Any], attempts: int, how: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PRODUCER, json.dumps(conf), str(attempts), how],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode


def _blocked(guard: MaintenanceGuard) -> int:
    counts = guard.attempt_counts().get("blocked", {})
    return int(counts.get("caption_generation", {}).get("publish", 0))


def test_refusals_in_short_lived_producers_are_counted(
    conf: dict[str, Any], guard: MaintenanceGuard
) -> None:
    guard.enable("normal", reason="migration", by="ops")
    before = _blocked(guard)
    assert _produce(conf, 1, "raise") == 1  # refused: MaintenanceActive ends the script
    assert _produce(conf, 1, "raise") == 1
    assert _blocked(guard) == before + 2


def test_test_mode_records_of_short_lived_processes_are_complete_and_a_kill_is_reported(
    conf: dict[str, Any], guard: MaintenanceGuard
) -> None:
    guard.enable("test", reason="rehearsal", by="ops")
    for attempts in (3, 3, 3, 2):
        assert _produce(conf, attempts, "exit") == 0
    report = build_test_report(guard, latency_calls=0)
    publish = report.operations["caption_generation"].by_surface["publish"]
    assert publish["attempts"] == 11
    verdicts = {v.name: v.result for v in report.verdicts}
    assert verdicts["records_complete"] == "pass", report.to_text()

    assert _produce(conf, 2, "kill") == -9
    # Once the killed process misses its polls, the report says records may be missing.
    wait_for(
        lambda: (
            {v.name: v.result for v in build_test_report(guard, latency_calls=0).verdicts}[
                "records_complete"
            ]
            != "pass"
        ),
        15,
    )
    report = build_test_report(guard, latency_calls=0)
    verdict = next(v for v in report.verdicts if v.name == "records_complete")
    assert verdict.result == "unknown" and "without a clean exit" in verdict.detail
    assert report.verdict != "pass"
