"""The state changes an operator makes: checked arguments, the new state and the audit
event of an enable or a disable, built from the state they replace (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .errors import InvalidInput
from .inputs import clean_actor, clean_note, clean_reason, parse_duration
from .modes import MaintenanceMode, Operation, OperationCatalog
from .status import MaintenanceStatus
from .store import SERVER_TIME, event_fields


@dataclass(frozen=True)
class Enabling:
    """A checked request to switch maintenance on (or change it)."""

    mode: MaintenanceMode
    reason: str
    duration: int | None
    actor: str
    auto_end: bool
    operations: tuple[str, ...]
    # The emergency run that will own the state; None keeps a running one's (an update
    # of the emergency does not call it off).
    emergency_id: str | None = None

    @classmethod
    def parse(
        cls,
        catalog: OperationCatalog,
        mode: MaintenanceMode | str,
        reason: object,
        duration: int | str | None,
        by: object,
        *,
        auto_end: bool = False,
        operations: Iterable[str | Operation] | None = None,
        emergency_id: str | None = None,
    ) -> Enabling:
        """Check every argument; raises `InvalidInput` (a `ValueError`) for the first bad one."""
        parsed = MaintenanceMode.parse(mode)
        clean = clean_reason(reason)
        seconds = None if duration is None else parse_duration(duration)
        actor = clean_actor(by)
        if auto_end and seconds is None:
            raise InvalidInput("auto_end needs a duration")
        requested: tuple[str, ...] = ()
        if operations is not None:
            if isinstance(operations, str):
                raise InvalidInput("operations must be a list of operation names")
            requested = tuple(dict.fromkeys(catalog.require(op) for op in operations))
            if not requested:
                raise InvalidInput("operations must name at least one operation")
            if parsed is MaintenanceMode.EMERGENCY:
                raise InvalidInput("emergency mode blocks every operation; omit operations")
        return cls(parsed, clean, seconds, actor, auto_end, requested, emergency_id)

    def new_state(self, old: MaintenanceStatus | None) -> MaintenanceStatus:
        """The state to write over ``old`` (its start time is stamped by the store)."""
        owner = self.emergency_id
        same_mode = old is not None and old.mode is self.mode
        if owner is None:
            owner = old.emergency_id if same_mode and old is not None else ""
        if self.mode is not MaintenanceMode.EMERGENCY:
            owner = ""
        return MaintenanceStatus(
            mode=self.mode,
            reason=self.reason,
            estimated_duration=self.duration,
            enabled_by=self.actor,
            auto_end=self.auto_end,
            blocked_operations=self.operations,
            emergency_id=owner,
            # A drain's hold stays while the mode does (an update keeps it).
            hold_queued=same_mode and old is not None and old.hold_queued,
        )

    def event(self, old: MaintenanceStatus | None) -> dict[str, str]:
        """The audit event: ``enabled``, ``mode_changed`` or ``updated``."""
        if old is None or not old.is_active:
            kind = "enabled"
        else:
            kind = "mode_changed" if old.mode is not self.mode else "updated"
        return event_fields(
            kind,
            actor=self.actor,
            reason=self.reason,
            at=SERVER_TIME,
            mode=self.mode.value,
            previous_mode=old.mode.value if old and old.mode else "",
            duration=self.duration,
            auto_end=self.auto_end,
            operations=list(self.operations) or None,
            emergency=self.emergency_id or None,
        )


@dataclass(frozen=True)
class Disabling:
    """A checked request to switch maintenance off."""

    actor: str
    note: str

    @classmethod
    def parse(cls, by: object, reason: object = "") -> Disabling:
        """Check the arguments; raises `InvalidInput`."""
        return cls(clean_actor(by), clean_note(reason))

    def event(self, old: MaintenanceStatus | None) -> dict[str, str]:
        """The audit event ``disabled``."""
        return event_fields(
            "disabled",
            actor=self.actor,
            reason=self.note,
            at=SERVER_TIME,
            previous_mode=old.mode.value if old and old.mode else "",
        )
