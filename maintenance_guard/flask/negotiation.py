"""Content negotiation for refusals: does the client prefer JSON or an HTML page?

A pure function of the ``Accept`` header, so it is tested without a server. Any ``+json``
type (``application/problem+json``) counts as JSON; q-values decide, the most specific
range that matches a type gives its quality (RFC 9110), and on a tie the type the client
names first wins (``application/json, text/html`` is a JSON client). A wildcard alone
(``*/*``, curl's default) or no header means HTML.
"""

from __future__ import annotations

from dataclasses import dataclass

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


@dataclass(frozen=True)
class _Range:
    type: str
    subtype: str
    quality: float
    position: int

    @property
    def full(self) -> str:
        return f"{self.type}/{self.subtype}"


def _parse(header: str) -> list[_Range]:
    ranges: list[_Range] = []
    for position, item in enumerate(header.split(",")[:64]):
        media, *params = item.split(";")
        media = media.strip().lower()
        kind, slash, sub = media.partition("/")
        if not slash or not kind or not sub:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
                if not 0.0 <= quality <= 1.0:  # also NaN
                    quality = 0.0
        ranges.append(_Range(kind, sub, quality, position))
    return ranges


def _is_json(r: _Range) -> bool:
    return r.full == "application/json" or r.subtype.endswith("+json")


def _best(ranges: list[_Range], exact: list[_Range], family: str) -> tuple[float, int]:
    """(quality, position of the range that gave it) for one family of types."""
    if exact:
        quality = max(r.quality for r in exact)
        return quality, min(r.position for r in exact if r.quality == quality)
    for wildcard in (f"{family}/*", "*/*"):
        matching = [r for r in ranges if r.full == wildcard]
        if matching:
            return max(r.quality for r in matching), 10_000  # a wildcard never wins a tie
    return 0.0, 10_000


def prefers_json(accept: str | None) -> bool:
    """True when the ``Accept`` header ranks JSON above HTML (see the module docstring)."""
    if not accept:
        return False
    ranges = _parse(accept)
    json_q, json_pos = _best(ranges, [r for r in ranges if _is_json(r)], "application")
    html_q, html_pos = _best(ranges, [r for r in ranges if r.full in _HTML_TYPES], "text")
    if json_q <= 0.0:
        return False
    if json_q != html_q:
        return json_q > html_q
    return json_pos < html_pos
