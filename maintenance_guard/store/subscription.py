"""`RedisSubscription`: a watcher's change notifications from Redis pub/sub."""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis
from redis.exceptions import RedisClusterException, RedisError

from ..errors import StoreUnavailable
from ..status import MaintenanceStatus
from .protocol import Notice, StateStamp


class RedisSubscription:
    """Change notifications, and the echo of this subscriber's own polls: a poll
    publishes to `echo_channel`, so a subscription whose echoes stop arriving is deaf
    (a half-open connection) and is replaced. The echoes also keep redis-py from sending
    health-check PINGs on an otherwise idle connection."""

    def __init__(self, client: redis.Redis[Any], channel: str) -> None:
        self.channel = channel
        self.echo_channel = f"{channel}:echo:{uuid.uuid4().hex[:16]}"
        self.echoes = 0
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            self._pubsub.subscribe(channel, self.echo_channel)
        except (RedisError, RedisClusterException, OSError) as exc:
            self._pubsub.close()
            raise StoreUnavailable(f"cannot subscribe: {exc}") from exc

    def wait(self, timeout: float) -> Notice | None:
        try:
            message = self._pubsub.get_message(timeout=max(timeout, 0.0))
        except (RedisError, RedisClusterException, OSError, ValueError) as exc:
            raise StoreUnavailable(f"subscription lost: {exc}") from exc
        if message is None or message.get("type") != "message":
            return None
        if message.get("channel") == self.echo_channel:
            self.echoes += 1
            return None
        return parse_notice(message["data"])

    def close(self) -> None:
        try:
            self._pubsub.close()
        except (RedisError, OSError):
            pass


def parse_notice(data: str | bytes) -> Notice:
    """A change notification: ``generation:version``, then the state's fields as a JSON
    array of names and values after a newline when it carries them. An unreadable one
    still means "something changed": re-read."""
    text = data.decode() if isinstance(data, bytes) else data
    stamp_text, _, payload = text.partition("\n")
    stamp = StateStamp.parse(stamp_text)
    if stamp is None:
        return Notice(StateStamp("?", -1))
    if not payload:
        return Notice(stamp)
    try:
        flat = json.loads(payload)
        status = MaintenanceStatus.from_fields(dict(zip(flat[::2], flat[1::2], strict=True)))
    except (ValueError, TypeError, KeyError):
        return Notice(stamp)
    if (status.generation, status.version) != (stamp.generation, stamp.version):
        return Notice(stamp)
    return Notice(stamp, status)
