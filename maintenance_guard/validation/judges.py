"""The report's verdicts: propagation, workers, status API, complete records."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from ..errors import InvalidInput
from ..status import MaintenanceStatus, iso_utc
from ..urls import mask_url, redact

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"
WORKER_ROLES = ("worker", "celery")  # "celery" is the default role of `celery worker`


@dataclass(frozen=True)
class Verdict:
    """One check of the procedure: pass, fail or unknown, and why."""

    name: str
    result: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        """JSON form."""
        return {"check": self.name, "result": self.result, "detail": self.detail}


def judge_propagation(
    presence: Mapping[str, Mapping[str, Any]], version: int, now: float, stale_after: float = 10.0
) -> tuple[Verdict, list[dict[str, Any]]]:
    """Did every live guard process see state ``version``? (presence: ``host:pid`` -> record)

    A process is live if it wrote its record within ``stale_after`` seconds (or five of
    its own poll intervals, whichever is longer).
    """
    live: list[dict[str, Any]] = []
    for member, record in sorted(presence.items()):
        if record.get("exited"):
            continue  # ended cleanly (its last records flushed)
        seen_at = as_float(record.get("seen_at"))
        interval = as_float(record.get("poll_interval")) or 1.0
        if seen_at is None or now - seen_at > max(stale_after, 5 * interval):
            continue
        live.append(
            {
                "process": member,
                "role": record.get("role"),
                "version": record.get("version"),
                "mode": record.get("mode"),
                "seen_at": iso_utc(seen_at),
                "up_to_date": record.get("version") == version,
            }
        )
    if not live:
        return Verdict("state_propagated", UNKNOWN, "no guard process reported presence"), live
    behind = [p["process"] for p in live if not p["up_to_date"]]
    if behind:
        detail = f"{len(behind)} of {len(live)} processes have not seen version {version}: "
        return Verdict("state_propagated", FAIL, detail + ", ".join(behind[:10])), live
    return (
        Verdict("state_propagated", PASS, f"all {len(live)} live processes saw version {version}"),
        live,
    )


def judge_records(
    dropped: int,
    presence: Mapping[str, Mapping[str, Any]],
    window_start: float,
    now: float,
    stale_after: float = 2.0,
) -> Verdict:
    """Are the recorded attempts complete? Fails when records were dropped (a full
    buffer); incomplete when a guard process alive during the window stopped without a
    clean exit (killed): what it recorded after its last flush never reached the store.
    """
    if dropped:
        return Verdict("records_complete", FAIL, f"{dropped} records dropped since the last reset")
    crashed = []
    for member, record in sorted(presence.items()):
        seen_at = as_float(record.get("seen_at"))
        interval = as_float(record.get("poll_interval")) or 1.0
        if record.get("exited") or seen_at is None or seen_at < window_start:
            continue
        if now - seen_at > max(stale_after, 3 * interval):  # missed three polls: gone
            crashed.append(f"{member} (recorded {record.get('recorded', '?')})")
    if crashed:
        return Verdict(
            "records_complete",
            UNKNOWN,
            f"{len(crashed)} guard process(es) stopped during the window without a clean "
            "exit; attempts they recorded after their last flush (at most one poll "
            "interval) are missing: " + ", ".join(crashed[:10]),
        )
    return Verdict(
        "records_complete",
        PASS,
        "no test record dropped; every process that ended during the window flushed its records",
    )


def judge_workers(
    workers: Mapping[str, str] | None, live_processes: Sequence[Mapping[str, Any]]
) -> Verdict:
    """Are the Celery workers registered, and does each have a live guard process?

    Fails when a registered worker's host has no live guard process (its state cannot be
    confirmed), or a live worker process runs on a host with no registered worker.
    """
    worker_procs = [p for p in live_processes if p.get("role") in WORKER_ROLES]
    if not workers:
        if worker_procs:
            return Verdict(
                "workers_registered",
                FAIL,
                f"{len(worker_procs)} worker processes are live but no worker is registered",
            )
        return Verdict("workers_registered", UNKNOWN, "no worker registered and none seen")
    hosts = {name: _worker_host(name, value) for name, value in workers.items()}
    live_hosts = {str(p["process"]).rsplit(":", 1)[0] for p in live_processes}
    unseen = sorted(name for name, host in hosts.items() if host not in live_hosts)
    unregistered = sorted(
        str(p["process"])
        for p in worker_procs
        if str(p["process"]).rsplit(":", 1)[0] not in set(hosts.values())
    )
    problems = []
    if unseen:
        problems.append("registered workers with no live guard process: " + ", ".join(unseen[:10]))
    if unregistered:
        problems.append("worker processes on unregistered hosts: " + ", ".join(unregistered[:10]))
    if problems:
        return Verdict("workers_registered", FAIL, "; ".join(problems))
    return Verdict(
        "workers_registered",
        PASS,
        f"{len(workers)} workers registered, each with a live guard process",
    )


def check_status_api(url: str | None, status: MaintenanceStatus, timeout: float = 3.0) -> Verdict:
    """GET the status API at ``url`` and check it reports the current mode."""
    if not url:
        return Verdict("status_api_answered", UNKNOWN, "not checked: give --status-url")
    shown = mask_url(url)  # the URL may carry user:password@
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"status URL must be http(s), not {shown!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            code = response.status
            body = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        return Verdict("status_api_answered", FAIL, f"{shown} answered HTTP {exc.code}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = redact(str(exc), url)
        return Verdict("status_api_answered", FAIL, f"{shown} did not answer: {reason}")
    expected = status.mode.value if status.mode else None
    if not isinstance(body, dict) or body.get("mode") != expected:
        got = body.get("mode") if isinstance(body, dict) else body
        return Verdict(
            "status_api_answered", FAIL, f"{shown} answered mode {got!r}, expected {expected!r}"
        )
    return Verdict("status_api_answered", PASS, f"{shown} answered {code} with mode {expected!r}")


def _worker_host(name: str, value: str) -> str:
    info = parse_json(value)
    host = info.get("host") or info.get("hostname")
    if isinstance(host, str) and host:
        return host
    # Celery names workers "name@host"; a presence member is "host:pid".
    return name.split("@", 1)[-1]


def parse_json(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def as_float(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(cast(Any, value))
    except (TypeError, ValueError):
        return None
