"""Notifications: signed webhooks and Apprise targets told about audit events, sent by
exactly one process, in order, with retries (see `delivery`)."""

from .delivery import DEFAULT_EVENTS, Notifier
from .signing import SIGNATURE_HEADER, sign, verify_signature
from .targets import AppriseTarget, DeliveryFailed, Target, WebhookTarget, parse_targets

__all__ = [
    "DEFAULT_EVENTS",
    "SIGNATURE_HEADER",
    "AppriseTarget",
    "DeliveryFailed",
    "Notifier",
    "Target",
    "WebhookTarget",
    "parse_targets",
    "sign",
    "verify_signature",
]
