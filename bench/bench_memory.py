"""Memory of the in-flight registry: Redis ``MEMORY USAGE`` of its keys with 10,000 jobs
registered through the registry's own `InflightRegistry.start`, in bytes per job."""

from __future__ import annotations

import time
import uuid

from maintenance_guard import MaintenanceGuard
from maintenance_guard.inflight import InflightJob, InflightRegistry

from .common import cleaned, emit, median, note, parse_args, redis_url, unique_prefix

JOBS = 10_000


def registry_bytes(client: object, registry: InflightRegistry) -> int:
    total = 0
    for key in (registry.zset_key, registry.jobs_key):
        used = client.memory_usage(key, samples=0)  # type: ignore[attr-defined]
        total += int(used or 0)
    return total


def main() -> None:
    args = parse_args(__doc__ or "")
    per_job: list[float] = []
    totals: list[int] = []
    for r in range(args.rounds):
        prefix = unique_prefix("mem")
        with cleaned(prefix) as client:
            guard = MaintenanceGuard.from_url(redis_url(), key_prefix=prefix)
            registry = InflightRegistry(guard.store, guard.settings.heartbeat_timeout)
            now = time.time()
            for i in range(JOBS):
                registry.start(
                    InflightJob(
                        id=str(uuid.uuid4()),
                        name="workers.tasks.generate_caption",
                        operation="caption_generation",
                        worker=f"celery@web-{i % 8}.example.internal",
                        pid=10_000 + i % 64,
                        started_at=now,
                    ),
                    now=now,
                )
            live = guard.store.count_inflight(time.time())
            if live != JOBS:
                raise SystemExit(f"registry counts {live} jobs, expected {JOBS}")
            total = registry_bytes(client, registry)
            totals.append(total)
            per_job.append(total / JOBS)
            note(f"memory round {r + 1}: {total} bytes, {per_job[-1]:.0f} B/job")
    emit(
        "memory: in-flight registry for 10,000 running jobs",
        "",
        f"{median(per_job):.0f} bytes per job ({median(totals) / 1e6:.2f} MB for {JOBS:,}: "
        "ZSET of deadlines + hash of JSON details)",
        "report bytes per job",
        None,
        rounds=args.rounds,
        jobs=JOBS,
        total_bytes=totals,
        bytes_per_job=per_job,
    )


if __name__ == "__main__":
    main()
