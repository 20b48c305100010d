"""Which operation a Flask request performs: the view's decorator, then method-aware patterns.

A mapping that names no HTTP method covers the request's unsafe methods (POST, PUT, PATCH,
DELETE, ...), and GET/HEAD only when the matched URL rule serves no unsafe method (a
GET-only view mapped to an operation means its GET). So a view serving GET and POST at
``/jobs`` mapped to ``job_creation`` refuses the POST and keeps the GET, HEAD and CORS
preflights open as ``read``. A mapping restricts itself to methods explicitly:
``@maintenance_operation("x", methods=["GET"])`` or a pattern ``"GET,POST /jobs*"``
(naming GET covers HEAD). OPTIONS is refused only when named.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import InvalidInput
from ..modes import Operation, OperationMap

logger = logging.getLogger("maintenance_guard")

F = TypeVar("F", bound=Callable[..., Any])

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_METHODS_HEAD = re.compile(r"^[A-Z]+(?:,[A-Z]+)*$")
_CACHE_LIMIT = 10_000


def parse_methods(methods: Iterable[str] | None) -> frozenset[str] | None:
    """Upper-cased method names (GET implies HEAD); None stays None (no restriction)."""
    if methods is None:
        return None
    if isinstance(methods, str):
        methods = [methods]
    names = {str(m).strip().upper() for m in methods}
    if not names or not all(n.isalpha() for n in names):
        raise InvalidInput(f"methods {sorted(names)!r} must be HTTP method names like GET, POST")
    if "GET" in names:
        names.add("HEAD")
    return frozenset(names)


def maintenance_operation(
    operation: str | Operation, *, methods: Iterable[str] | None = None
) -> Callable[[F], F]:
    """Declare the operation a view performs; it wins over endpoint patterns.

    Without ``methods`` it covers the view's unsafe methods (and GET/HEAD of a view that
    serves only those); ``methods=["GET"]`` makes the listed methods that operation. The
    name must be in the guard's catalog when a request arrives (else `UnknownOperation`
    is raised then, never a silent "allowed").
    """
    name = operation.value if isinstance(operation, Operation) else operation
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise InvalidInput(f"operation name {name!r} must be a lowercase identifier")
    only = parse_methods(methods)

    def mark(view: F) -> F:
        view._maintenance_operation = name  # type: ignore[attr-defined]
        view._maintenance_methods = only  # type: ignore[attr-defined]
        return view

    return mark


def covers(methods: frozenset[str] | None, method: str, *, only_safe: bool) -> bool:
    """Whether a mapping restricted to ``methods`` (None: unrestricted) applies to ``method``
    of a URL rule that serves ``only_safe`` methods or not."""
    if methods is not None:
        return method in methods
    if method not in SAFE_METHODS:
        return True
    return method != "OPTIONS" and only_safe


def serves_only_safe(rule_methods: Iterable[str] | None) -> bool:
    """True when a URL rule's methods are all GET/HEAD/OPTIONS (or unknown)."""
    return all(m in SAFE_METHODS for m in rule_methods or ())


@dataclass(frozen=True)
class RequestPattern:
    """One configured pattern: an fnmatch glob on endpoint names or URL rules, maybe with
    methods (``"GET,POST /jobs*"``)."""

    source: str
    glob: str
    operation: str
    methods: frozenset[str] | None

    @classmethod
    def parse(cls, pattern: str, operation: str) -> RequestPattern:
        head, sep, rest = pattern.partition(" ")
        if sep and rest.strip() and _METHODS_HEAD.match(head):
            return cls(pattern, rest.strip(), operation, parse_methods(head.split(",")))
        return cls(pattern, pattern, operation, None)


class RequestClassifier:
    """Classifies requests with a guard's endpoint `OperationMap`; memoised, thread-safe.

    Patterns added to the map later are picked up (the compiled list is rebuilt when the
    map's patterns change).
    """

    def __init__(self, operation_map: OperationMap) -> None:
        self._map = operation_map
        self._source: tuple[tuple[str, str], ...] = ()
        self._patterns: tuple[RequestPattern, ...] = ()
        self._cache: dict[tuple[str | None, str | None, str, bool], str | None] = {}
        self._lock = threading.Lock()

    def patterns(self) -> tuple[RequestPattern, ...]:
        """The parsed patterns, in match order."""
        current = self._map.patterns
        if current != self._source:
            with self._lock:
                self._patterns = tuple(RequestPattern.parse(p, op) for p, op in current)
                self._cache = {}
                self._source = current
        return self._patterns

    def match(
        self, endpoint: str | None, rule: str | None, method: str, *, only_safe: bool
    ) -> str | None:
        """The operation of the first pattern matching the endpoint, else the URL rule."""
        patterns = self.patterns()
        key = (endpoint, rule, method, only_safe)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found: str | None = None
        for target in (endpoint, rule):
            if target is None:
                continue
            for pattern in patterns:
                if fnmatch.fnmatchcase(target, pattern.glob) and covers(
                    pattern.methods, method, only_safe=only_safe
                ):
                    found = pattern.operation
                    break
            if found is not None:
                break
        cache = self._cache
        if len(cache) < _CACHE_LIMIT:
            cache[key] = found
        return found

    def unmatched(self, endpoints: Iterable[str], rules: Iterable[str]) -> list[RequestPattern]:
        """Patterns that match none of ``endpoints`` and none of ``rules``."""
        names = list(endpoints) + list(rules)
        return [
            p for p in self.patterns() if not any(fnmatch.fnmatchcase(n, p.glob) for n in names)
        ]


def view_declaration(view: object) -> tuple[str, frozenset[str] | None] | None:
    """The ``(operation, methods)`` a view declared with `maintenance_operation`, if any."""
    declared = getattr(view, "_maintenance_operation", None)
    if not isinstance(declared, str):
        return None
    methods = getattr(view, "_maintenance_methods", None)
    return declared, methods if isinstance(methods, frozenset) else None


def classify_request(
    classifier: RequestClassifier,
    view: object,
    endpoint: str | None,
    rule: str | None,
    rule_methods: Iterable[str] | None,
    method: str,
    *,
    unmapped_write: str | None,
) -> str | None:
    """The operation of one request: the view's `maintenance_operation`, else the first
    pattern matching the endpoint or URL rule, else ``read`` for GET/HEAD/OPTIONS and
    ``unmapped_write`` for other methods."""
    only_safe = serves_only_safe(rule_methods)
    declared = view_declaration(view)
    if declared is not None and covers(declared[1], method, only_safe=only_safe):
        return declared[0]
    found = classifier.match(endpoint, rule, method, only_safe=only_safe)
    if found is not None:
        return found
    if method in SAFE_METHODS:
        return Operation.READ.value
    return unmapped_write


def warn_unmatched_patterns(
    classifier: RequestClassifier, endpoints: Iterable[str], rules: Iterable[str], app_name: str
) -> None:
    """Log a warning per pattern that matches no endpoint and no URL rule of an app (a
    blueprint renames endpoint ``create_job`` to ``v2.create_job``)."""
    for pattern in classifier.unmatched(endpoints, rules):
        logger.warning(
            "maintenance-guard: endpoint pattern %r (-> %s) matches no endpoint and no "
            "URL rule of app %r, so it blocks nothing; blueprint endpoints are named "
            "'<blueprint>.<view>' and their rules carry the url_prefix",
            pattern.source,
            pattern.operation,
            app_name,
            extra={"mg_pattern": pattern.source, "mg_operation": pattern.operation},
        )
