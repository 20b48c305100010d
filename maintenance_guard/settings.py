"""`GuardSettings`: one dataclass gathering configuration from Celery, Flask or the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import InvalidInput

STORE_ERROR_POLICIES = ("last_known", "closed", "open")
WORKER_POLICIES = ("defer", "reject")


@dataclass(frozen=True)
class GuardSettings:
    """Guard configuration. Celery reads ``maintenance_guard_<name>`` keys from ``app.conf``,
    Flask ``MAINTENANCE_GUARD_<NAME>`` keys from ``app.config``.
    """

    redis_url: str | None = None
    key_prefix: str = "maintenance_guard"
    poll_interval: float = 1.0
    on_store_error: str = "last_known"
    # Operations normal mode refuses; None = every high-risk operation of the catalog.
    blocked_operations: tuple[str, ...] | None = None
    # Glob pattern -> operation, for Celery task names and Flask endpoints.
    task_operations: Mapping[str, str] = field(default_factory=dict)
    endpoint_operations: Mapping[str, str] = field(default_factory=dict)
    # What the worker does with a message published during maintenance by a producer
    # without the guard: "defer" (park, replay after) or "reject".
    worker_policy: str = "defer"
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 30.0
    default_retry_after: int = 300
    # Notifications (see notify/): target URLs (http(s) = signed webhook, anything else
    # through Apprise), the webhooks' signing secret, the event types sent (None: the
    # default set), how long a failing send is retried, and each try's timeout.
    notify_urls: tuple[str, ...] = ()
    notify_secret: str | None = field(default=None, repr=False)
    notify_events: tuple[str, ...] | None = None
    notify_retry_for: float = 300.0
    notify_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.on_store_error not in STORE_ERROR_POLICIES:
            raise InvalidInput(
                f"on_store_error must be one of {', '.join(STORE_ERROR_POLICIES)}, "
                f"not {self.on_store_error!r}"
            )
        if self.worker_policy not in WORKER_POLICIES:
            raise InvalidInput(
                f"worker_policy must be one of {', '.join(WORKER_POLICIES)}, "
                f"not {self.worker_policy!r}"
            )
        if not 0.05 <= self.poll_interval <= 60:
            raise InvalidInput("poll_interval must be between 0.05 and 60 seconds")
        if not 0 < self.heartbeat_interval < self.heartbeat_timeout:
            raise InvalidInput("heartbeat_interval must be positive and below heartbeat_timeout")
        if isinstance(self.notify_urls, str) or isinstance(self.notify_events, str):
            raise InvalidInput("notify_urls and notify_events are lists, not one string")
        if not 0 <= self.notify_retry_for <= 86_400:
            raise InvalidInput("notify_retry_for must be between 0 and 86400 seconds")
        if not 0 < self.notify_timeout <= 60:
            raise InvalidInput("notify_timeout must be above 0 and at most 60 seconds")

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any], prefix: str) -> GuardSettings:
        """Read ``<prefix><name>`` keys (any case) from a config mapping."""
        values: dict[str, Any] = {}
        lowered = {str(k).lower(): v for k, v in config.items()}
        for f in fields(cls):
            key = (prefix + f.name).lower()
            if key in lowered and lowered[key] is not None:
                value = lowered[key]
                if f.name in ("blocked_operations", "notify_urls", "notify_events"):
                    value = tuple(value) if not isinstance(value, str) else value
                values[f.name] = value
        return cls(**values)
