"""Publish throughput with the guard installed (maintenance off) against bare Celery, and
the cost of a refused publish during maintenance against a bare publish.

Two long-lived processes, one bare (never imports the guard) and one with the guard
installed, publish to the same Redis broker in alternating batches, so both see the same
machine noise. Refused publishes are proven by the broker's queue length staying 0.
"""

from __future__ import annotations

import os
import subprocess
import sys

from maintenance_guard import MaintenanceGuard, MaintenanceMode

from .common import ROOT, cleaned, emit, median, note, parse_args, redis_url, unique_prefix


class Publisher:
    """A `bench.publish_child` process."""

    def __init__(self, guarded: bool, prefix: str, queue: str) -> None:
        env = dict(os.environ)
        env["MGBENCH_GUARDED"] = "1" if guarded else "0"
        env["MGBENCH_PREFIX"] = prefix
        self.cpu = 0.0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.publish_child", queue],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self._line() != "ready":
            raise SystemExit("publisher did not start")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line:
            raise SystemExit(f"publisher exited ({self.proc.wait(5)})")
        return line

    def run(self, what: str, count: int) -> float:
        """Wall seconds of ``count`` calls; their CPU seconds are added to ``self.cpu``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{what} {count}\n")
        self.proc.stdin.flush()
        wall, cpu = self._line().split()
        self.cpu += float(cpu)
        return float(wall)

    def sync(self, version: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"sync {version}\n")
        self.proc.stdin.flush()
        self._line()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def main() -> None:
    args = parse_args(__doc__ or "")
    batch, pairs = (50, 16) if args.quick else (50, 48)
    prefix = unique_prefix("pub")
    queue = f"{prefix}-q"
    ratios: list[float] = []
    cpu_ratios: list[float] = []
    cpu_extra_us: list[float] = []
    bare_us: list[float] = []
    guarded_us: list[float] = []
    refusal_x: list[float] = []
    refusal_us: list[float] = []
    with cleaned(prefix) as client:
        guard = MaintenanceGuard.from_url(redis_url(), key_prefix=prefix)
        # A fresh pair of processes every round: a process's own speed (memory layout,
        # hash seeds) differs by several percent, so one long-lived pair would bias every
        # round the same way; the median over fresh pairs does not.
        for r in range(args.rounds):
            bare = Publisher(False, prefix, queue)
            guarded = Publisher(True, prefix, queue)
            try:
                for side in (bare, guarded):  # warm-up
                    side.run("publish", batch)
                guarded.sync(guard.disable(by="bench").version)
                t_bare = t_guarded = 0.0
                bare.cpu = guarded.cpu = 0.0
                pair_ratios: list[float] = []
                for i in range(pairs):
                    if (i + r) % 2 == 0:
                        one_bare = bare.run("publish", batch)
                        one_guarded = guarded.run("publish", batch)
                    else:
                        one_guarded = guarded.run("publish", batch)
                        one_bare = bare.run("publish", batch)
                    t_bare += one_bare
                    t_guarded += one_guarded
                    pair_ratios.append(one_bare / one_guarded)
                client.delete(queue)
                n = batch * pairs
                bare_us.append(t_bare / n * 1e6)
                guarded_us.append(t_guarded / n * 1e6)
                # Throughput guarded / bare: the median pair, so a burst of load from
                # elsewhere that hits one batch does not decide the round.
                ratios.append(median(pair_ratios))
                cpu_ratios.append(bare.cpu / guarded.cpu)
                cpu_extra_us.append((guarded.cpu - bare.cpu) / n * 1e6)
                guarded.sync(guard.enable(MaintenanceMode.NORMAL, reason="b", by="bench").version)
                t_refuse = t_pub = 0.0
                pair_x: list[float] = []
                for _ in range(pairs):
                    one_refuse = guarded.run("refuse", batch)
                    one_pub = bare.run("publish", batch)
                    t_refuse += one_refuse
                    t_pub += one_pub
                    pair_x.append(one_pub / one_refuse)
                if int(client.llen(queue)) != n:  # only the bare publishes arrived
                    raise SystemExit(f"queue holds {client.llen(queue)}, expected {n}")
                client.delete(queue)
                refusal_us.append(t_refuse / n * 1e6)
                refusal_x.append(median(pair_x))
                note(
                    f"publish round {r + 1}: ratio {ratios[-1]:.3f} "
                    f"(CPU {cpu_ratios[-1]:.3f}), refusal "
                    f"{refusal_x[-1]:.0f}x faster"
                )
            finally:
                bare.close()
                guarded.close()
            guard.disable(by="bench")
            guard.stop(timeout=2)
            client.delete(queue)
    ratio = median(ratios)
    emit(
        "publish throughput, guard installed, maintenance off",
        "bare Celery apply_async, same broker",
        f"ratio {ratio:.3f} ({median(guarded_us):.0f} µs vs {median(bare_us):.0f} µs a publish; "
        f"CPU ratio {median(cpu_ratios):.3f}, +{median(cpu_extra_us):.0f} µs CPU)",
        "ratio >= 0.99",
        ratio >= 0.99,
        rounds=args.rounds,
        publishes_per_side_per_round=batch * pairs,
        ratios=ratios,
        cpu_ratios=cpu_ratios,
        cpu_extra_us=cpu_extra_us,
        bare_us=bare_us,
        guarded_us=guarded_us,
    )
    faster = median(refusal_x)
    emit(
        "publish refusal cost during maintenance",
        "bare publish",
        f"refusal {median(refusal_us):.1f} µs, {faster:.0f}x faster than a publish "
        f"({faster / 20:.1f}x the target); 0 refused messages reached the broker",
        "refusal >= 20x faster",
        faster >= 20,
        rounds=args.rounds,
        refusal_x=refusal_x,
        refusal_us=refusal_us,
    )


if __name__ == "__main__":
    main()
