"""Webhook signatures: HMAC-SHA256 over ``"<timestamp>.<body>"``, as Stripe signs its
webhooks, so a receiver can check who sent a request and refuse a replayed one.

Header: ``Maintenance-Guard-Signature: t=<unix seconds>,v1=<hex digest>``.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Maintenance-Guard-Signature"
DEFAULT_TOLERANCE = 300.0  # seconds a signed request stays acceptable (replay window)


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header value for ``body`` sent at ``timestamp`` (default now)."""
    at = int(time.time()) if timestamp is None else int(timestamp)
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def verify_signature(
    secret: str,
    header: str | None,
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """True if ``header`` signs ``body`` with ``secret`` and is at most ``tolerance``
    seconds old (for receivers; compares in constant time)."""
    if not header:
        return False
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        at = int(parts["t"])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - at) > tolerance:
        return False
    expected = sign(secret, body, at).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))
