"""maintenance-guard: put Celery workers and Flask apps into maintenance mode safely."""

import logging

from .emergency import EmergencyReport, TerminatedJob
from .errors import (
    ConcurrentChange,
    InvalidInput,
    MaintenanceActive,
    MaintenanceGuardError,
    StoreUnavailable,
    UnknownOperation,
)
from .guard import MaintenanceGuard
from .impact import WindowImpact, read_impact
from .modes import MaintenanceMode, Operation, OperationCatalog, OperationInfo, OperationMap
from .sessions import SessionInvalidator, admin_predicate
from .settings import GuardSettings
from .status import MaintenanceStatus
from .store import AuditEvent, MemoryStore, RedisStore, StateStore

__version__ = "0.1.0"

logging.getLogger("maintenance_guard").addHandler(logging.NullHandler())

__all__ = [
    "AuditEvent",
    "ConcurrentChange",
    "EmergencyReport",
    "GuardSettings",
    "InvalidInput",
    "MaintenanceActive",
    "MaintenanceGuard",
    "MaintenanceGuardError",
    "MaintenanceMode",
    "MaintenanceStatus",
    "MemoryStore",
    "Operation",
    "OperationCatalog",
    "OperationInfo",
    "OperationMap",
    "RedisStore",
    "SessionInvalidator",
    "StateStore",
    "StoreUnavailable",
    "TerminatedJob",
    "UnknownOperation",
    "WindowImpact",
    "__version__",
    "admin_predicate",
    "read_impact",
]
