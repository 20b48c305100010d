"""The admin routes' JSON bodies, checked against the types of the OpenAPI document.

Only types are checked here (a string where the document says integer is refused, not
converted); ranges, lengths and the meaning of values are the guard's own checks. Every
failure is an `InvalidInput` (400), raised before anything changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

from ..errors import InvalidInput
from ..modes import MaintenanceMode

_MAX_INT = 10**12  # beyond float range the duration parser would overflow


def _is_integer(value: object) -> bool:
    # JSON has one number type: 60 and 60.0 are the same integer (JSON Schema agrees).
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def _integer(value: object, what: str) -> int:
    if not _is_integer(value):
        raise InvalidInput(f"{what} must be an integer (a JSON number), not {_kind(value)}")
    number = int(cast(float, value))
    if abs(number) > _MAX_INT:
        raise InvalidInput(f"{what} is out of range")
    return number


def _kind(value: object) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a number" if isinstance(value, (int, float)) else type(value).__name__


def _string(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    if name not in body:
        if required:
            raise InvalidInput(f"{name} is required")
        return None
    value = body[name]
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string, not {_kind(value)}")
    return value


@dataclass(frozen=True)
class EnableRequest:
    """``POST /api/maintenance/enable``."""

    mode: MaintenanceMode
    reason: str
    duration: int | str | None
    auto_end: bool
    operations: list[str] | None

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> EnableRequest:
        """Check the body's types; raises `InvalidInput`."""
        mode = _string(body, "mode", required=False)
        reason = _string(body, "reason", required=True)
        duration = _duration(body, "duration")
        auto_end = body.get("auto_end", False)
        if not isinstance(auto_end, bool):
            raise InvalidInput(f"auto_end must be true or false, not {_kind(auto_end)}")
        operations = body.get("operations")
        if "operations" in body:
            if not isinstance(operations, list) or not all(
                isinstance(op, str) for op in operations
            ):
                raise InvalidInput("operations must be a list of operation names")
            if not operations:
                raise InvalidInput("operations must name at least one operation (or be left out)")
        assert reason is not None
        return cls(
            mode=MaintenanceMode.parse(mode if mode is not None else "normal"),
            reason=reason,
            duration=duration,
            auto_end=auto_end,
            operations=operations,
        )


@dataclass(frozen=True)
class DisableRequest:
    """``POST /api/maintenance/disable`` (the body is optional)."""

    reason: str

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> DisableRequest:
        """Check the body's types; raises `InvalidInput`."""
        return cls(reason=_string(body, "reason", required=False) or "")


@dataclass(frozen=True)
class EmergencyRequest:
    """``POST /api/maintenance/emergency``."""

    reason: str
    grace_period: int

    @classmethod
    def from_body(cls, body: dict[str, Any], default_grace: int = 30) -> EmergencyRequest:
        """Check the body's types; raises `InvalidInput`."""
        reason = _string(body, "reason", required=True)
        grace = default_grace
        if "grace_period" in body:
            grace = _integer(body["grace_period"], "grace_period")
        assert reason is not None
        return cls(reason=reason, grace_period=grace)


def _duration(body: dict[str, Any], name: str) -> int | str | None:
    """An optional duration: seconds or a text like ``1h30m`` (checked by the guard)."""
    if name not in body:
        return None
    raw = body[name]
    if isinstance(raw, str):
        return raw
    if _is_integer(raw):
        return _integer(raw, name)
    raise InvalidInput(f"{name} must be a number of seconds or a text like 1h30m, not {_kind(raw)}")


def _names(body: dict[str, Any], name: str) -> list[str] | None:
    value = body.get(name)
    if name in body and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
        raise InvalidInput(f"{name} must be a list of names")
    return value


@dataclass(frozen=True)
class PauseRequest:
    """``POST /api/maintenance/pause``."""

    queues: list[str]
    reason: str
    duration: int | str | None
    workers: list[str] | None
    beat: bool

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> PauseRequest:
        """Check the body's types; raises `InvalidInput` (names are checked by the guard)."""
        reason = _string(body, "reason", required=True)
        beat = body.get("beat", False)
        if not isinstance(beat, bool):
            raise InvalidInput(f"beat must be true or false, not {_kind(beat)}")
        assert reason is not None
        return cls(
            queues=_names(body, "queues") or [],
            reason=reason,
            duration=_duration(body, "duration"),
            workers=_names(body, "workers"),
            beat=beat,
        )


@dataclass(frozen=True)
class ResumeRequest:
    """``POST /api/maintenance/resume``: ``queues``, or ``all: true``."""

    queues: list[str] | None
    everything: bool

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ResumeRequest:
        """Check the body's types; raises `InvalidInput`."""
        everything = body.get("all", False)
        if not isinstance(everything, bool):
            raise InvalidInput(f"all must be true or false, not {_kind(everything)}")
        return cls(queues=_names(body, "queues"), everything=everything)


@dataclass(frozen=True)
class ScheduleRequest:
    """``POST /api/maintenance/schedule``."""

    at: str
    duration: int | str
    mode: str
    reason: str
    notice: int | str | None
    auto_end: bool
    operations: list[str] | None
    drain_before: int | str | None

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ScheduleRequest:
        """Check the body's types; raises `InvalidInput` (values are checked by the guard)."""
        at = _string(body, "at", required=True)
        reason = _string(body, "reason", required=True)
        duration = _duration(body, "duration")
        if duration is None:
            raise InvalidInput("duration is required (seconds, or a text like 1h)")
        auto_end = body.get("auto_end", False)
        if not isinstance(auto_end, bool):
            raise InvalidInput(f"auto_end must be true or false, not {_kind(auto_end)}")
        operations = _names(body, "operations")
        if operations is not None and not operations:
            raise InvalidInput("operations must name at least one operation (or be left out)")
        assert at is not None and reason is not None
        return cls(
            at=at,
            duration=duration,
            mode=_string(body, "mode", required=False) or "normal",
            reason=reason,
            notice=_duration(body, "notice"),
            auto_end=auto_end,
            operations=operations,
            drain_before=_duration(body, "drain_before"),
        )


@dataclass(frozen=True)
class RescheduleRequest:
    """``POST /api/maintenance/schedule/<id>/reschedule``."""

    at: str

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> RescheduleRequest:
        """Check the body's types; raises `InvalidInput`."""
        at = _string(body, "at", required=True)
        assert at is not None
        return cls(at=at)


@dataclass(frozen=True)
class UpdateRequest:
    """``POST /api/maintenance/update``."""

    text: str

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> UpdateRequest:
        """Check the body's types; raises `InvalidInput`."""
        text = _string(body, "text", required=True)
        assert text is not None
        return cls(text=text)
