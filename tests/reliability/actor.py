"""Helper processes for the reliability suite: each runs a real guard in its own OS process.

Usage: ``python -m tests.reliability.actor ROLE URL PREFIX [args...]``

Roles:
- ``storm SEED N``: print ``ready``, wait for ``go`` on stdin, then make N random admin
  changes (enable normal/emergency/test, disable, ``guard.emergency``), each with a unique
  actor name, printing
  one JSON line per call, then ``done``. A sampler thread checks the versions this process
  sees never go backwards and reports ``{"backwards": [...]}`` before ``done``.
- ``replayer BROKER QUEUE``: a guarded producer that replays deferred work when it sees
  maintenance end; prints ``ready <version>``.
- ``fleet CONF_JSON``: a guarded producer process of `tests.reliability.fleet_app`
  (replays deferred work when maintenance ends, or when its sweep finds some waiting);
  prints ``ready``, runs until killed.
- ``watch POLL [SKEW]``: start the watcher (its clock ``SKEW`` seconds ahead of the real
  one), print ``ready <version>``, then ``seen <version> <mode> <blocked> <at>`` whenever
  the state this process sees (history and version) or its verdict changes (blocked =
  caption_generation is refused; at = the real time of the observation), until killed.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time

from maintenance_guard import MaintenanceGuard, MaintenanceGuardError


def emit(data: object) -> None:
    print(json.dumps(data) if not isinstance(data, str) else data, flush=True)


def storm(url: str, prefix: str, seed: int, count: int) -> None:
    guard = MaintenanceGuard.from_url(url, key_prefix=prefix, poll_interval=0.1)
    guard.start()
    rng = random.Random(seed)
    seen: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen.append(guard.current().version)
            time.sleep(0.001)

    emit("ready")
    if sys.stdin.readline().strip() != "go":
        return
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for i in range(count):
        actor = f"s{seed}-{i}"
        kind = rng.choice(["normal", "emergency", "test", "disable", "disable", "emergency_call"])
        try:
            if kind == "disable":
                status = guard.disable(by=actor)
            elif kind == "emergency_call":
                # The full emergency entry point (no Celery app here: nothing to revoke).
                guard.emergency(f"storm {actor}", grace_period=1, by=actor, sessions=False)
                status = guard.current()
            else:
                status = guard.enable(kind, reason=f"storm {actor}", by=actor)
        except MaintenanceGuardError as exc:
            emit({"actor": actor, "kind": kind, "ok": False, "error": type(exc).__name__})
            continue
        emit({"actor": actor, "kind": kind, "ok": True, "version": status.version})
    stop.set()
    sampler.join()
    backwards = [(a, b) for a, b in zip(seen, seen[1:], strict=False) if b < a]
    emit({"backwards": backwards[:20], "samples": len(seen)})
    guard.stop(timeout=2)
    emit("done")


def watch(url: str, prefix: str, poll: float, skew: float = 0.0) -> None:
    guard = MaintenanceGuard.from_url(
        url, key_prefix=prefix, poll_interval=poll, clock=lambda: time.time() + skew
    )
    guard.start()
    emit(f"ready {guard.current().version}")
    last: tuple[str, int, bool] | None = None
    while True:
        status = guard.current()
        blocked = guard.is_blocked("caption_generation")
        seen = (status.generation, status.version, blocked)
        if seen != last:
            if last is not None:
                mode = status.mode.value if status.mode else None
                emit(f"seen {status.version} {mode} {blocked} {time.time():.4f}")
            last = seen
        time.sleep(0.002)


def replayer(url: str, prefix: str, broker: str, queue: str) -> None:
    """A producer process with the guard installed: it replays deferred work when it sees
    maintenance end (its change listener), competing with every other such process."""
    from tests.integration.celery_support import make_app

    app = make_app(broker=broker, redis_url=url, prefix=prefix, queue=queue)
    guard = app._maintenance_guard.guard
    guard.start()
    emit(f"ready {guard.current().version}")
    sys.stdin.readline()  # runs until the test closes stdin or kills it


def fleet(conf_json: str) -> None:
    from tests.reliability.fleet_app import make_fleet_app

    app = make_fleet_app(**json.loads(conf_json))
    app._maintenance_guard.guard.start()
    emit("ready")
    sys.stdin.readline()  # runs until the test closes stdin or kills it


def main() -> None:
    role, url, prefix, *rest = sys.argv[1:]
    if role == "fleet":
        fleet(rest[0])
    elif role == "storm":
        storm(url, prefix, int(rest[0]), int(rest[1]))
    elif role == "replayer":
        replayer(url, prefix, rest[0], rest[1])
    elif role == "watch":
        watch(url, prefix, float(rest[0]) if rest else 0.2, float(rest[1]) if rest[1:] else 0.0)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
