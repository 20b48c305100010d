"""The state changes an operator makes: checked arguments, the new state and the audit
event of an enable, a disable, a queue pause or resume, built from the state they
replace (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .errors import InvalidInput
from .inputs import clean_actor, clean_note, clean_reason, parse_duration
from .modes import MaintenanceMode, Operation, OperationCatalog
from .pauses import QueuePause, clean_names, pauses_in_effect
from .status import MaintenanceStatus
from .store import SERVER_TIME, event_fields
from .windows import (
    MAX_AHEAD_SECONDS,
    MAX_UPDATES,
    MAX_WINDOWS,
    MaintenanceWindow,
    ProgressUpdate,
    iso_z,
    parse_when,
)


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
        # The window stays open through updates and mode changes (see tally.py).
        opened = None
        if old is not None and old.is_active:
            opened = old.opened_at if old.opened_at is not None else old.started_at
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
            # Progress notes belong to the maintenance under way: a change keeps them.
            updates=old.updates if old is not None and old.is_active else (),
            opened_at=opened,
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


@dataclass(frozen=True)
class Pausing:
    """A checked request to pause queues."""

    queues: tuple[str, ...]
    workers: tuple[str, ...]
    duration: int | None
    reason: str
    actor: str
    beat: bool

    @classmethod
    def parse(
        cls,
        queues: object,
        *,
        reason: object,
        by: object = None,
        duration: int | str | None = None,
        workers: object = None,
        beat: bool = False,
    ) -> Pausing:
        """Check every argument; raises `InvalidInput` for the first bad one. A pause
        needs at least one queue: there is no "pause everything" (that is emergency)."""
        names = clean_names(queues, what="queues")
        if not names:
            raise InvalidInput("name at least one queue to pause (--queue NAME)")
        if not isinstance(beat, bool):
            raise InvalidInput("beat must be true or false")
        seconds = None if duration is None else parse_duration(duration, what="pause duration")
        return cls(
            queues=names,
            workers=clean_names(workers, what="workers"),
            duration=seconds,
            reason=clean_reason(reason),
            actor=clean_actor(by),
            beat=beat,
        )

    def apply(self, current: Iterable[QueuePause], now: float) -> tuple[QueuePause, ...]:
        """The pauses after this one: a queue paused again gets the new scope and end."""
        ends = None if self.duration is None else now + self.duration
        new = {
            q: QueuePause(q, self.reason, self.actor, now, ends, self.workers, self.beat)
            for q in self.queues
        }
        kept = [p for p in pauses_in_effect(current, now) if p.queue not in new]
        return tuple(kept) + tuple(new.values())

    def event(self, unknown: Iterable[str] = ()) -> dict[str, str]:
        """The audit event ``queues_paused``."""
        return event_fields(
            "queues_paused",
            actor=self.actor,
            reason=self.reason,
            queues=list(self.queues),
            workers=list(self.workers) or None,
            duration=self.duration,
            beat=self.beat or None,
            unknown_queues=list(unknown) or None,
        )


@dataclass(frozen=True)
class Resuming:
    """A checked request to resume paused queues (``queues`` empty: all of them)."""

    queues: tuple[str, ...]
    actor: str

    @classmethod
    def parse(
        cls, queues: object = None, *, everything: bool = False, by: object = None
    ) -> Resuming:
        """Check the arguments: either queues or ``everything``, not both, not neither."""
        names = clean_names(queues, what="queues")
        if names and everything:
            raise InvalidInput("give queues or all, not both")
        if not names and not everything:
            raise InvalidInput("name the queues to resume (--queue NAME), or resume all (--all)")
        return cls(names, clean_actor(by))

    def apply(self, current: Iterable[QueuePause], now: float) -> tuple[QueuePause, ...]:
        """The pauses left after resuming."""
        if not self.queues:
            return ()
        return tuple(p for p in pauses_in_effect(current, now) if p.queue not in self.queues)

    def event(self, resumed: Iterable[str]) -> dict[str, str]:
        """The audit event ``queues_resumed``."""
        return event_fields("queues_resumed", actor=self.actor, queues=list(resumed))


@dataclass(frozen=True)
class Scheduling:
    """A checked request to schedule a maintenance window."""

    start_at: float
    duration: int
    mode: MaintenanceMode
    reason: str
    notice: int
    auto_end: bool
    operations: tuple[str, ...]
    blocked: tuple[str, ...]
    drain_before: int
    actor: str

    @classmethod
    def parse(
        cls,
        catalog: OperationCatalog,
        default_blocked: Iterable[str],
        at: object,
        duration: int | str,
        mode: MaintenanceMode | str,
        reason: object,
        *,
        notice: int | str | None = None,
        auto_end: bool = False,
        operations: Iterable[str | Operation] | None = None,
        drain_before: int | str | None = None,
        by: object = None,
    ) -> Scheduling:
        """Check every argument; raises `InvalidInput`. ``default_blocked`` is what
        normal mode blocks when ``operations`` is not given."""
        request = Enabling.parse(
            catalog, mode, reason, duration, by, auto_end=auto_end, operations=operations
        )
        if request.mode is MaintenanceMode.EMERGENCY:
            raise InvalidInput(
                "an emergency is not scheduled: schedule normal maintenance, or run "
                "`maintenance-guard emergency` when it is needed"
            )
        if request.duration is None:
            raise InvalidInput("a window needs a duration (e.g. 1h)")
        notice_s = (
            0 if notice is None else parse_duration(notice, what="notice", maximum=30 * 86400)
        )
        drain_s = 0 if drain_before is None else parse_duration(drain_before, what="drain_before")
        if request.mode is MaintenanceMode.TEST:
            blocked: tuple[str, ...] = ()
        else:
            blocked = request.operations or tuple(default_blocked)
        return cls(
            start_at=parse_when(at, what="start time"),
            duration=request.duration,
            mode=request.mode,
            reason=request.reason,
            notice=notice_s,
            auto_end=auto_end,
            operations=request.operations,
            blocked=blocked,
            drain_before=drain_s,
            actor=request.actor,
        )

    def window(self, window_id: str) -> MaintenanceWindow:
        """The window this request describes."""
        return MaintenanceWindow(
            id=window_id,
            start_at=self.start_at,
            duration=self.duration,
            mode=self.mode.value,
            reason=self.reason,
            by=self.actor,
            notice=self.notice,
            auto_end=self.auto_end,
            operations=self.operations,
            blocked_operations=self.blocked,
            drain_before=self.drain_before,
        )

    def event(self, window: MaintenanceWindow) -> dict[str, str]:
        """The audit event ``window_scheduled``."""
        return event_fields(
            "window_scheduled",
            actor=self.actor,
            reason=self.reason,
            window=window.id,
            start=iso_z(window.start_at),
            duration=window.duration,
            mode=window.mode,
            notice=window.notice or None,
            auto_end=window.auto_end or None,
            drain_before=window.drain_before or None,
        )


def check_window_fits(
    window: MaintenanceWindow, others: Iterable[MaintenanceWindow], now: float
) -> None:
    """Raise `InvalidInput` unless ``window`` starts in the future, within a year, and
    overlaps none of ``others``."""
    if window.start_at <= now:
        raise InvalidInput(f"the start time {iso_z(window.start_at)} has passed")
    if window.start_at > now + MAX_AHEAD_SECONDS:
        raise InvalidInput("a window starts at most a year ahead")
    listed = [w for w in others if w.id != window.id]
    if len(listed) >= MAX_WINDOWS:
        raise InvalidInput(f"at most {MAX_WINDOWS} windows may be scheduled")
    for other in listed:
        if window.overlaps(other):
            raise InvalidInput(
                f"overlaps window {other.id} ({iso_z(other.start_at)} to "
                f"{iso_z(other.end_at)}): move or cancel one of them"
            )


@dataclass(frozen=True)
class Updating:
    """A checked progress note for the maintenance under way."""

    text: str
    actor: str

    @classmethod
    def parse(cls, text: object, by: object = None) -> Updating:
        """Check the text (a reason's rules) and the actor; raises `InvalidInput`."""
        return cls(clean_reason(text), clean_actor(by))

    def apply(self, updates: Iterable[ProgressUpdate], now: float) -> tuple[ProgressUpdate, ...]:
        """The updates with this one appended (the oldest dropped past the limit)."""
        return (*updates, ProgressUpdate(now, self.text, self.actor))[-MAX_UPDATES:]

    def event(self) -> dict[str, str]:
        """The audit event ``progress_update``."""
        return event_fields("progress_update", actor=self.actor, reason=self.text)
