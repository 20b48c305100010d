"""Validation of operator input: reasons, durations, actor names (no I/O)."""

from __future__ import annotations

import math
import re
import unicodedata

from .errors import InvalidInput

MAX_REASON_LENGTH = 500
MAX_ACTOR_LENGTH = 100
MAX_DURATION_SECONDS = 7 * 24 * 3600
MAX_GRACE_SECONDS = 3600
MAX_KILL_AFTER = 600

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# Invisible characters that change how text reads without showing: bidi controls
# (U+202A-202E, U+2066-2069, U+200E/F, U+061C), zero-width ones (U+200B-200D, U+2060,
# U+FEFF), tag characters and every other format character (category Cf), plus the
# Hangul fillers, which are letters that print as nothing.
_HANGUL_FILLERS = "\u115f\u1160\u3164\uffa0"
_BLANK_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Mn", "Me", "Cc", "Cf"})
_DURATION_PART = re.compile(r"(\d+)\s*([dhms])", re.IGNORECASE)
_DURATION_FULL = re.compile(r"^\s*(\d+\s*[dhms]\s*)+$", re.IGNORECASE)
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def clean_text(value: object, *, what: str, max_length: int, required: bool = True) -> str:
    """Strip control and invisible characters and outer whitespace; refuse empty or
    over-long text (judged after stripping)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text, not {type(value).__name__}")
    if len(value) > max_length * 4:
        # Refuse huge input before doing any work on it.
        raise InvalidInput(f"{what} is {len(value)} characters long; at most {max_length}")
    if _SURROGATE.search(value):
        # Unpaired surrogates (e.g. "\ud800" in JSON) cannot be stored as UTF-8.
        raise InvalidInput(f"{what} contains an invalid character (an unpaired surrogate)")
    text = _CONTROL.sub(" ", strip_invisible(value)).strip()
    text = re.sub(r" {2,}", " ", text)
    if all(unicodedata.category(c) in _BLANK_CATEGORIES for c in text):
        text = ""  # only spaces and combining marks: nothing a reader could see
    if required and not text:
        raise InvalidInput(f"{what} must not be empty")
    if len(text) > max_length:
        raise InvalidInput(f"{what} is {len(text)} characters long; at most {max_length}")
    return text


def strip_invisible(text: str) -> str:
    """``text`` without bidi controls, zero-width and other invisible format characters."""
    return "".join(c for c in text if not (unicodedata.category(c) == "Cf" or c in _HANGUL_FILLERS))


def clean_reason(value: object) -> str:
    """A maintenance reason: required, at most 500 characters, control and invisible
    characters removed."""
    return clean_text(value, what="reason", max_length=MAX_REASON_LENGTH)


def clean_note(value: object) -> str:
    """An optional free-text note for the audit log: a reason's rules, but may be empty."""
    return clean_text(value, what="reason", max_length=MAX_REASON_LENGTH, required=False)


def clean_actor(value: object) -> str:
    """Who made a change; defaults to 'unknown' when not given."""
    text = clean_text(value, what="actor name", max_length=MAX_ACTOR_LENGTH, required=False)
    return text or "unknown"


def parse_duration(
    value: object,
    *,
    what: str = "duration",
    maximum: int = MAX_DURATION_SECONDS,
    allow_zero: bool = False,
) -> int:
    """Seconds from an int/float or a text like ``90``, ``90s``, ``30m``, ``1h30m``, ``2d``.

    Raises `InvalidInput` for negative, zero (unless ``allow_zero``), absurd
    (over ``maximum``), fractional or unparsable values.
    """
    seconds: float
    if isinstance(value, bool) or value is None:
        raise InvalidInput(f"{what} must be a number of seconds or a text like 1h30m")
    if isinstance(value, int) and abs(value) > maximum:
        # Checked before float(): an int beyond float range would raise OverflowError.
        if value < 0:
            raise InvalidInput(f"{what} must not be negative")
        raise InvalidInput(f"{what} is too long; at most {maximum}s")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            seconds = float(text)
        elif _DURATION_FULL.match(text):
            seconds = sum(
                int(n) * _UNIT_SECONDS[u.lower()] for n, u in _DURATION_PART.findall(text)
            )
        else:
            raise InvalidInput(
                f"{what} {value[:40]!r} is not understood; use seconds or forms like "
                "90s, 30m, 1h30m, 2d"
            )
    else:
        raise InvalidInput(f"{what} must be a number of seconds or a text like 1h30m")
    if not math.isfinite(seconds) or seconds != int(seconds):
        raise InvalidInput(f"{what} must be a whole number of seconds")
    if seconds < 0:
        raise InvalidInput(f"{what} must not be negative")
    if seconds == 0 and not allow_zero:
        raise InvalidInput(f"{what} must be at least 1 second")
    if seconds > maximum:
        raise InvalidInput(f"{what} of {int(seconds)}s is too long; at most {maximum}s")
    return int(seconds)


def format_duration(seconds: float) -> str:
    """Human form of a duration: ``1h30m``, ``45s``."""
    seconds = int(round(seconds))
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            n, seconds = divmod(seconds, size)
            parts.append(f"{n}{unit}")
    return "".join(parts)


def validate_emergency_args(
    reason: object, grace_period: object, kill_after: object, by: object
) -> tuple[str, int, int, str]:
    """Clean the arguments of an emergency; raise `InvalidInput` before anything changes."""
    clean = clean_reason(reason)
    grace = parse_duration(
        grace_period, what="grace period", maximum=MAX_GRACE_SECONDS, allow_zero=True
    )
    kill = parse_duration(kill_after, what="kill_after", maximum=MAX_KILL_AFTER, allow_zero=True)
    return clean, grace, kill, clean_actor(by)
