"""Where notifications go: signed webhooks (``http://``/``https://`` URLs) and every
service Apprise knows (``slack://``, ``mailto://``, ``ntfy://``, ``json://`` ...; the
``notify`` extra installs it).

A target sends one event at a time and raises `DeliveryFailed` saying whether trying
again may help; `delivery.Notifier` retries, orders and claims.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..errors import InvalidInput
from ..store import AuditEvent
from ..urls import mask_url
from .signing import SIGNATURE_HEADER, sign

MIN_SECRET_LENGTH = 16
try:
    USER_AGENT = f"maintenance-guard/{importlib.metadata.version('maintenance-guard')}"
except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
    USER_AGENT = "maintenance-guard"


class DeliveryFailed(Exception):
    """A target did not take an event; ``retryable`` says whether to try again."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Target(Protocol):
    """One notification destination."""

    name: str  # for logs, metrics and audit events: the URL with secrets masked
    id: str  # stable short id (the cursor of its deliveries is kept under it)

    def send(self, event: AuditEvent, body: dict[str, Any]) -> None: ...


def target_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:12]


@dataclass
class WebhookTarget:
    """POSTs the event as JSON, signed (`signing.sign`), with the event id as
    ``Idempotency-Key``: a receiver that sees a key again has seen the event."""

    url: str
    secret: str
    timeout: float

    def __post_init__(self) -> None:
        self.name = mask_url(self.url)
        self.id = target_id(self.url)

    def send(self, event: AuditEvent, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        request = urllib.request.Request(
            self.url,
            data=data,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "Idempotency-Key": event.id,
                "Maintenance-Guard-Event": event.type,
                SIGNATURE_HEADER: sign(self.secret, data),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s) only, checked at parse
                response.read(1024)
        except urllib.error.HTTPError as exc:
            # 408/425/429 and 5xx may pass later; any other answer will not.
            retryable = exc.code in (408, 425, 429) or exc.code >= 500
            raise DeliveryFailed(f"{self.name} answered {exc.code}", retryable=retryable) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryFailed(f"{self.name}: {reason}", retryable=True) from exc


@dataclass
class AppriseTarget:
    """Sends a short text through Apprise (chat, e-mail, push; 100+ services)."""

    url: str
    timeout: float

    def __post_init__(self) -> None:
        import apprise

        self.name = mask_url(self.url)
        self.id = target_id(self.url)
        self._apprise = apprise.Apprise()
        if not self._apprise.add(self.url):
            raise InvalidInput(f"not a notification URL Apprise knows: {self.name}")

    def send(self, event: AuditEvent, body: dict[str, Any]) -> None:
        if not self._apprise.notify(title=title_of(event), body=text_of(event)):
            raise DeliveryFailed(f"{self.name}: Apprise could not deliver", retryable=True)


def title_of(event: AuditEvent) -> str:
    return f"maintenance-guard: {event.type.replace('_', ' ')}"


def text_of(event: AuditEvent) -> str:
    """The event as a few lines of plain text (chat and e-mail targets)."""
    lines = [f"{event.type.replace('_', ' ')} at {event.to_dict()['at']}"]
    if event.reason:
        lines.append(f"Reason: {event.reason}")
    if event.actor:
        lines.append(f"By: {event.actor}")
    for key, value in sorted(event.fields.items()):
        lines.append(f"{key}: {value}")
    return "\n".join(lines)


def parse_targets(urls: Sequence[str], secret: str | None, timeout: float) -> list[Target]:
    """The targets for ``urls``; `InvalidInput` (URL masked) for one that cannot work:
    a webhook without a secret of at least 16 characters, an unknown scheme, Apprise
    not installed."""
    if isinstance(urls, str):
        raise InvalidInput("notify_urls must be a list of URLs, not one string")
    targets: list[Target] = []
    for url in urls:
        scheme = urlsplit(str(url)).scheme.lower()
        if not scheme:
            raise InvalidInput(f"not a notification URL: {mask_url(str(url))!r}")
        if scheme in ("http", "https"):
            if not secret or len(secret) < MIN_SECRET_LENGTH:
                raise InvalidInput(
                    f"webhook {mask_url(url)} needs notify_secret "
                    f"(at least {MIN_SECRET_LENGTH} characters) to sign its requests"
                )
            targets.append(WebhookTarget(url, secret, timeout))
            continue
        try:
            import apprise  # noqa: F401
        except ImportError:
            raise InvalidInput(
                f"{scheme}:// notifications go through Apprise: "
                "pip install 'maintenance-guard[notify]'"
            ) from None
        targets.append(AppriseTarget(url, timeout))
    if len({t.id for t in targets}) != len(targets):
        raise InvalidInput("notify_urls lists the same URL twice")
    return targets
