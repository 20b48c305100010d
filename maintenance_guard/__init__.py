"""maintenance-guard: put Celery workers and Flask apps into maintenance mode safely."""

import logging

from .errors import (
    ConcurrentChange,
    InvalidInput,
    MaintenanceActive,
    MaintenanceGuardError,
    StoreUnavailable,
    UnknownOperation,
)
from .guard import MaintenanceGuard
from .modes import MaintenanceMode, Operation, OperationCatalog, OperationInfo, OperationMap
from .settings import GuardSettings
from .status import MaintenanceStatus
from .store import AuditEvent, RedisStore, StateStore

__version__ = "0.1.0"

logging.getLogger("maintenance_guard").addHandler(logging.NullHandler())

__all__ = [
    "AuditEvent",
    "ConcurrentChange",
    "GuardSettings",
    "InvalidInput",
    "MaintenanceActive",
    "MaintenanceGuard",
    "MaintenanceGuardError",
    "MaintenanceMode",
    "MaintenanceStatus",
    "Operation",
    "OperationCatalog",
    "OperationInfo",
    "OperationMap",
    "RedisStore",
    "StateStore",
    "StoreUnavailable",
    "UnknownOperation",
    "__version__",
]
