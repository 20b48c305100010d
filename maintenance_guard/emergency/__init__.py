"""Emergency mode: pause the fleet, grace period, revocation, terminated-job records,
recovery.

`run_emergency` (behind `MaintenanceGuard.emergency`) switches to EMERGENCY at once,
invalidates non-admin sessions, has this app's workers stop consuming (each pauses
itself and records it), gives the jobs running at that moment the grace period, then
revokes the rest with SIGTERM and SIGKILLs what still runs after ``kill_after``. Every
terminated job is recorded in Redis; `recover` re-enqueues the recoverable ones exactly
once; `after_disable` checks the fleet when maintenance ends. No Celery import here:
the app is driven through ``app.control`` (`CeleryFleet`); the worker side is
`maintenance_guard.celery.emergency`.

Modules: `run` (the run), `fleet` (remote control), `revocation`, `records` (Redis),
`report`, `setup` (what a guard's emergencies drive), `deactivation`, `recovery`.
"""

from ..errors import EmergencyInProgress
from ..inputs import MAX_KILL_AFTER, validate_emergency_args
from .deactivation import after_disable
from .fleet import CMD_ACTIVE, CMD_KILL, CMD_RESERVED, CMD_RUNNING, CeleryFleet, fleet_of
from .records import (
    FINISHED_PHASES,
    EmergencyRecords,
    EmergencyReport,
    QueueSpec,
    TerminatedJob,
    json_safe,
)
from .recovery import RecoveryResult, recover
from .report import EmergencyOverview, build_report, render_report_text
from .run import EmergencyProgress, EmergencyRun, run_emergency
from .setup import (
    EmergencySetup,
    configure_celery,
    configure_sessions,
    setup_of,
    watch_deactivation,
)

__all__ = [
    "CMD_ACTIVE",
    "CMD_KILL",
    "CMD_RESERVED",
    "CMD_RUNNING",
    "FINISHED_PHASES",
    "MAX_KILL_AFTER",
    "CeleryFleet",
    "EmergencyInProgress",
    "EmergencyOverview",
    "EmergencyProgress",
    "EmergencyRecords",
    "EmergencyReport",
    "EmergencyRun",
    "EmergencySetup",
    "QueueSpec",
    "RecoveryResult",
    "TerminatedJob",
    "after_disable",
    "build_report",
    "configure_celery",
    "configure_sessions",
    "fleet_of",
    "json_safe",
    "recover",
    "render_report_text",
    "run_emergency",
    "setup_of",
    "validate_emergency_args",
    "watch_deactivation",
]
