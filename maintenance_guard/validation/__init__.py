"""The test-mode validation report: what normal or emergency mode would have done.

`build_test_report(guard)` finds the latest test-mode window in the audit log, tallies
the attempts recorded in it per operation and surface, lists the in-flight jobs and
which would outlive an emergency grace period, counts the sessions an emergency would
invalidate, measures the cost of `guard.check` in this process, and gives a verdict on
each step of the procedure (state propagated, workers registered, status API answered,
records complete). `reset_test_data` clears the test records and counters.
"""

from .inventory import count_sessions, describe_inflight
from .judges import (
    FAIL,
    PASS,
    UNKNOWN,
    Verdict,
    check_status_api,
    judge_propagation,
    judge_records,
    judge_workers,
)
from .latency import measure_check_latency
from .records import TestRecords
from .report import PRESENCE_FORGET_AFTER, TestReport, build_test_report, reset_test_data
from .window import NoTestWindow, OperationTally, TestWindow, find_test_window, tally_records

__all__ = [
    "FAIL",
    "PASS",
    "PRESENCE_FORGET_AFTER",
    "UNKNOWN",
    "NoTestWindow",
    "OperationTally",
    "TestRecords",
    "TestReport",
    "TestWindow",
    "Verdict",
    "build_test_report",
    "check_status_api",
    "count_sessions",
    "describe_inflight",
    "find_test_window",
    "judge_propagation",
    "judge_records",
    "judge_workers",
    "measure_check_latency",
    "reset_test_data",
    "tally_records",
]
