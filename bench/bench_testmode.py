"""Test-mode recording cost: `check` in test mode (records) against maintenance off, and
the records/counters reaching Redis intact after a burst (flushed by the watcher)."""

from __future__ import annotations

import timeit

from maintenance_guard import MaintenanceGuard, MaintenanceMode

from .common import cleaned, emit, median, parse_args, redis_url, unique_prefix

# A recorded check does more than `is_blocked` (< 2 us): it buffers the attempt. 5 us is
# under 1% of the cheapest surface it watches (a Celery publish takes hundreds of us).
TARGET_NS = 5000.0


def per_call_ns(stmt: str, env: dict[str, object], number: int) -> float:
    return timeit.Timer(stmt, globals=env).timeit(number) / number * 1e9


def main() -> None:
    args = parse_args(__doc__ or "")
    number = 20_000 if args.quick else 40_000  # below the 50,000-record buffer per flush
    prefix = unique_prefix("testmode")
    with cleaned(prefix):
        guard = MaintenanceGuard.from_url(redis_url(), key_prefix=prefix)
        try:
            guard.start()
            env = {"check": guard.check, "op": "caption_generation"}
            stmt = "check(op, surface='http', target='api.caption', user='bob')"
            off_ns: list[float] = []
            test_ns: list[float] = []
            recorded = 0
            for _ in range(args.rounds):  # side by side, round after round
                guard.disable(by="bench")
                off_ns.append(per_call_ns(stmt, env, number))
                guard.enable(MaintenanceMode.TEST, reason="bench", by="bench")
                test_ns.append(per_call_ns(stmt, env, number))
                recorded += number
                guard.flush()
            counts = guard.store.read_attempt_counts()
            stored = counts.get("would_block_normal:http:caption_generation", 0)
        finally:
            guard.stop(timeout=2)
    off, test = median(off_ns), median(test_ns)
    extra = max(0.0, test - off)
    emit(
        "test-mode check (records the attempt)",
        "check with maintenance off",
        f"{test / 1000:.2f} µs vs {off / 1000:.2f} µs (+{extra:.0f} ns); "
        f"{stored}/{recorded} attempts counted in Redis",
        "< 5 µs a check, none lost",
        test < TARGET_NS and stored == recorded,
        rounds=args.rounds,
        calls_per_round=number,
        off_ns=off_ns,
        test_ns=test_ns,
    )


if __name__ == "__main__":
    main()
