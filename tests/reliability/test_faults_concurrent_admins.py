"""Concurrent admins in several OS processes: one consistent state, every change logged."""

from __future__ import annotations

import json
from collections.abc import Callable

from maintenance_guard import MaintenanceGuard
from tests.reliability.conftest import Proc, actor

PROCESSES = 4
CALLS_PER_PROCESS = 30


def test_random_changes_from_several_processes_leave_one_state_and_a_complete_audit_log(
    redis_url: str,
    key_prefix: str,
    make_guard: Callable[..., MaintenanceGuard],
    spawn: Callable[..., Proc],
) -> None:
    procs = [
        spawn(*actor("storm", redis_url, key_prefix, seed, CALLS_PER_PROCESS))
        for seed in range(PROCESSES)
    ]
    for p in procs:
        p.expect("ready")
    for p in procs:  # release them together so their writes really interleave
        p.send("go")
    calls: list[dict[str, object]] = []
    samplers: list[dict[str, object]] = []
    for p in procs:
        p.expect("done", timeout=60)
        for line in p.all_lines:
            if line.startswith("{"):
                row = json.loads(line)
                (samplers if "backwards" in row else calls).append(row)
    assert len(calls) == PROCESSES * CALLS_PER_PROCESS

    final = make_guard().status()
    everything = make_guard().events(limit=10_000)
    # State changes carry the version they made; other audit events (an emergency's own
    # steps and warnings) do not.
    events = [e for e in everything if "version" in e.fields]
    by_actor: dict[str, list[str]] = {}
    for e in events:
        by_actor.setdefault(e.actor, []).append(e.type)
    activations: dict[str, int] = {}
    for e in everything:
        if e.type == "emergency_activated":
            activations[e.actor] = activations.get(e.actor, 0) + 1

    # The stored version moves by exactly one per logged change: no change without its event.
    versions = sorted(int(e.fields["version"]) for e in events)
    assert versions == list(range(1, final.version + 1))

    ok_calls = [c for c in calls if c["ok"]]
    # Every successful enable is in the log exactly once; a refused call left no trace.
    for c in calls:
        logged = by_actor.get(str(c["actor"]), [])
        if not c["ok"]:
            assert logged == [], c
        elif c["kind"] != "disable":
            assert len(logged) == 1 and logged[0] in ("enabled", "mode_changed", "updated"), c
            if c["kind"] == "emergency_call":
                assert activations.get(str(c["actor"])) == 1, c
        else:
            # a disable writes only when maintenance was on; then it is logged once
            assert logged in ([], ["disabled"]), c
    changes = [c for c in ok_calls if by_actor.get(str(c["actor"]))]
    assert len(events) == len(changes)
    assert all(actor_name.startswith("s") for actor_name in by_actor)  # nothing else wrote

    # The final state is the one the newest event describes.
    newest = max(events, key=lambda e: int(e.fields["version"]))
    if final.is_active:
        assert final.enabled_by == newest.actor
        assert final.mode is not None and newest.fields["mode"] == final.mode.value
    else:
        assert newest.type == "disabled"

    # Each process saw its own calls' versions rise, and its view never went backwards.
    for seed in range(PROCESSES):
        mine = [
            int(str(c["version"]))
            for c in ok_calls
            if str(c["actor"]).startswith(f"s{seed}-")
            and c["actor"] in by_actor
            and c["kind"] != "emergency_call"  # returns a report; its version is read later
        ]
        assert mine == sorted(mine) and len(set(mine)) == len(mine), (seed, mine)
    assert len(samplers) == PROCESSES
    for s in samplers:
        assert s["backwards"] == [], s
