"""Guard check on the hot path: `is_blocked` against a plain dict lookup, same loop shape."""

from __future__ import annotations

import timeit

from maintenance_guard import MaintenanceGuard, MaintenanceMode

from .common import cleaned, emit, median, parse_args, redis_url, unique_prefix

TARGET_NS = 2000.0


def per_call_ns(stmt: str, env: dict[str, object], number: int) -> float:
    return timeit.Timer(stmt, globals=env).timeit(number) / number * 1e9


def main() -> None:
    args = parse_args(__doc__ or "")
    number = 50_000 if args.quick else 300_000
    prefix = unique_prefix("hot")
    with cleaned(prefix):
        guard = MaintenanceGuard.from_url(redis_url(), key_prefix=prefix)
        try:
            guard.start()
            table = {"caption_generation": True, "read": False}
            op = "caption_generation"
            results: dict[str, dict[str, list[float]]] = {}
            for state in ("on", "off"):
                if state == "on":
                    guard.enable(MaintenanceMode.NORMAL, reason="bench", by="bench")
                else:
                    guard.disable(by="bench")
                assert guard.is_blocked(op) is (state == "on")
                env = {"d": table, "f": guard.is_blocked, "op": op}
                dict_ns: list[float] = []
                guard_ns: list[float] = []
                for _ in range(args.rounds):  # side by side, round after round
                    dict_ns.append(per_call_ns("d[op]", env, number))
                    guard_ns.append(per_call_ns("f(op)", env, number))
                results[state] = {"dict_ns": dict_ns, "guard_ns": guard_ns}
        finally:
            guard.stop(timeout=2)
    on_guard = median(results["on"]["guard_ns"])
    on_dict = median(results["on"]["dict_ns"])
    off_guard = median(results["off"]["guard_ns"])
    worst = max(on_guard, off_guard)
    emit(
        "guard check on the hot path (is_blocked)",
        "a dict lookup",
        f"{on_guard / 1000:.2f} µs in maintenance, {off_guard / 1000:.2f} µs off; "
        f"dict {on_dict:.0f} ns ({on_guard / on_dict:.0f}x); "
        f"{TARGET_NS / worst:.0f}x under target",
        "< 2 µs",
        worst < TARGET_NS,
        rounds=args.rounds,
        calls_per_round=number,
        **{f"{state}_{k}": v for state, r in results.items() for k, v in r.items()},
    )


if __name__ == "__main__":
    main()
