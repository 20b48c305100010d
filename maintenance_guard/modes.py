"""Maintenance modes, the operation catalog and the per-mode blocking policy (no I/O)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from .errors import InvalidInput, UnknownOperation


class MaintenanceMode(str, Enum):
    """The three maintenance modes; the string values are part of the contract."""

    NORMAL = "normal"
    EMERGENCY = "emergency"
    TEST = "test"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: object) -> MaintenanceMode:
        """Return the mode named by ``value``; raise `InvalidInput` for anything else."""
        if isinstance(value, MaintenanceMode):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        choices = ", ".join(m.value for m in cls)
        raise InvalidInput(f"unknown mode {value!r}; choose one of: {choices}")


class Operation(str, Enum):
    """The built-in operation types (contract string values)."""

    CAPTION_GENERATION = "caption_generation"
    JOB_CREATION = "job_creation"
    PLATFORM_OPERATIONS = "platform_operations"
    BATCH_OPERATIONS = "batch_operations"
    USER_DATA_MODIFICATION = "user_data_modification"
    IMAGE_PROCESSING = "image_processing"
    READ = "read"
    ADMIN = "admin"

    def __str__(self) -> str:
        return self.value


HIGH_RISK_OPERATIONS: tuple[str, ...] = (
    Operation.CAPTION_GENERATION.value,
    Operation.JOB_CREATION.value,
    Operation.PLATFORM_OPERATIONS.value,
    Operation.BATCH_OPERATIONS.value,
    Operation.USER_DATA_MODIFICATION.value,
    Operation.IMAGE_PROCESSING.value,
)

GENERAL_MESSAGE = (
    "System maintenance in progress. Some features are temporarily unavailable. "
    "Please try again later."
)
EMERGENCY_MESSAGE = (
    "Emergency maintenance in progress. The service is temporarily unavailable. "
    "Please try again later."
)

_OPERATION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class OperationInfo:
    """What users are told about one operation type while it is blocked."""

    name: str
    message: str
    alternatives: tuple[str, ...] = ()
    high_risk: bool = True
    label: str = ""

    @property
    def title(self) -> str:
        """The human label ("Caption generation"); from the name when none was given."""
        return self.label or self.name.replace("_", " ").capitalize()


_BUILTIN_INFO: tuple[OperationInfo, ...] = (
    OperationInfo(
        "caption_generation",
        "Caption generation is temporarily unavailable due to system maintenance.",
        ("Browse and edit your existing captions", "Review previously generated captions"),
        label="Caption generation",
    ),
    OperationInfo(
        "job_creation",
        "New jobs cannot be started during system maintenance.",
        ("Check the status of your existing jobs", "Download completed results"),
        label="Starting new jobs",
    ),
    OperationInfo(
        "platform_operations",
        "Platform connections and switching are temporarily unavailable during system maintenance.",
        ("Use the platform you are connected to in read-only mode",),
        label="Platform connections",
    ),
    OperationInfo(
        "batch_operations",
        "Batch operations are temporarily unavailable during system maintenance.",
        ("Work on single items one at a time once maintenance ends", "Review past batches"),
        label="Batch operations",
    ),
    OperationInfo(
        "user_data_modification",
        "Profile and settings changes are temporarily unavailable during system maintenance.",
        ("View your profile and settings",),
        label="Profile and settings changes",
    ),
    OperationInfo(
        "image_processing",
        "Image upload and processing are temporarily unavailable during system maintenance.",
        ("Browse images you have already uploaded",),
        label="Image upload and processing",
    ),
    OperationInfo(
        "read",
        "This page is temporarily unavailable during emergency maintenance.",
        ("Check the maintenance status page for updates",),
        high_risk=False,
        label="Viewing pages",
    ),
    OperationInfo(
        "admin",
        "Administrative functions are temporarily unavailable during maintenance.",
        (),
        high_risk=False,
        label="Administration",
    ),
)


class OperationCatalog:
    """The known operations and their messages; applications may register their own.

    Not thread-safe for registration; register at start-up, read anywhere.
    """

    def __init__(self, extra: Iterable[OperationInfo] = ()) -> None:
        self._info: dict[str, OperationInfo] = {i.name: i for i in _BUILTIN_INFO}
        for info in extra:
            self.register(
                info.name,
                info.message,
                info.alternatives,
                high_risk=info.high_risk,
                label=info.label,
            )

    def register(
        self,
        name: str,
        message: str,
        alternatives: Iterable[str] = (),
        *,
        high_risk: bool = True,
        label: str = "",
    ) -> OperationInfo:
        """Add (or replace) an operation; names are lowercase identifiers. ``label`` is
        what pages show (default: from the name)."""
        if not isinstance(name, str) or not _OPERATION_NAME.match(name):
            raise InvalidInput(
                f"operation name {name!r} must be a lowercase identifier "
                "(letters, digits, underscores; at most 64 characters)"
            )
        info = OperationInfo(name, message, tuple(alternatives), high_risk, str(label or ""))
        self._info[name] = info
        return info

    def require(self, operation: str | Operation) -> str:
        """Return the operation's name; raise `UnknownOperation` if it is not in the catalog."""
        name = operation.value if isinstance(operation, Operation) else operation
        if name not in self._info:
            known = ", ".join(sorted(self._info))
            raise UnknownOperation(f"unknown operation {operation!r}; known operations: {known}")
        return name

    def info(self, operation: str | Operation) -> OperationInfo:
        """Return the `OperationInfo` for an operation (raises `UnknownOperation`)."""
        return self._info[self.require(operation)]

    def __contains__(self, name: object) -> bool:
        return name in self._info

    def names(self) -> tuple[str, ...]:
        """All operation names, built-in first, in registration order."""
        return tuple(self._info)

    def high_risk(self) -> tuple[str, ...]:
        """The operations normal mode blocks by default."""
        return tuple(n for n, i in self._info.items() if i.high_risk)


def blocked_operations_for(
    mode: MaintenanceMode | None,
    catalog: OperationCatalog,
    normal_blocked: Iterable[str] | None = None,
) -> frozenset[str]:
    """Operations refused to non-admins in ``mode``.

    Normal blocks ``normal_blocked`` (default: the high-risk ones); emergency blocks
    every operation; test and no maintenance block nothing.
    """
    if mode is MaintenanceMode.NORMAL:
        return frozenset(catalog.high_risk() if normal_blocked is None else normal_blocked)
    if mode is MaintenanceMode.EMERGENCY:
        return frozenset(catalog.names())
    return frozenset()


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one attempt."""

    blocked: bool
    would_block_normal: bool
    would_block_emergency: bool


def decide(
    mode: MaintenanceMode | None,
    operation: str | None,
    blocked: frozenset[str],
    *,
    is_admin: bool,
    normal_blocked: frozenset[str],
) -> Decision:
    """Decide one attempt. ``operation=None`` means unclassified: only emergency refuses it.

    ``blocked`` is the set in force for ``mode``; ``normal_blocked`` is used to say
    what normal mode would have done (for test mode's records).
    """
    if is_admin or mode is None:
        return Decision(False, False, False)
    if mode is MaintenanceMode.TEST:
        return Decision(False, operation in normal_blocked, True)
    if operation is None:
        return Decision(mode is MaintenanceMode.EMERGENCY, False, True)
    return Decision(operation in blocked, operation in normal_blocked, True)


class OperationMap:
    """Maps task names or endpoints to operations with glob patterns, first match wins.

    Lookups are memoised, so classifying the same name twice costs a dict lookup.
    """

    def __init__(self, patterns: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        items = patterns.items() if isinstance(patterns, Mapping) else patterns
        self._patterns: list[tuple[str, str]] = []
        self._cache: dict[str, str | None] = {}
        for pattern, operation in items:
            self.add(pattern, operation)

    def add(self, pattern: str, operation: str | Operation) -> None:
        """Map names matching ``pattern`` (fnmatch glob) to ``operation``."""
        if not isinstance(pattern, str) or not pattern:
            raise InvalidInput(f"pattern {pattern!r} must be a non-empty string")
        op = operation.value if isinstance(operation, Operation) else operation
        self._patterns.append((pattern, op))
        self._cache.clear()

    @property
    def patterns(self) -> tuple[tuple[str, str], ...]:
        """The (pattern, operation) pairs in match order."""
        return tuple(self._patterns)

    def classify(self, name: str) -> str | None:
        """The operation of ``name``, or None if no pattern matches it."""
        try:
            return self._cache[name]
        except KeyError:
            pass
        found: str | None = None
        for pattern, operation in self._patterns:
            if fnmatch.fnmatchcase(name, pattern):
                found = operation
                break
        if len(self._cache) < 10_000:
            self._cache[name] = found
        return found

    def validate(self, catalog: OperationCatalog) -> None:
        """Raise `UnknownOperation` if a pattern maps to an operation not in ``catalog``."""
        for _pattern, operation in self._patterns:
            catalog.require(operation)
