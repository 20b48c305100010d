"""Arbitrary input through the Python API and the CLI: a valid state or a clear refusal.

Hypothesis drives `guard.enable` and the `maintenance-guard` CLI (through click's runner for
speed, plus a few real subprocess runs) against a real Redis. A refused call raises
`InvalidInput` (exit 2 on the CLI), never another exception or a traceback, and leaves the
stored state and the audit log exactly as they were.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maintenance_guard import InvalidInput, MaintenanceGuard, MaintenanceMode
from maintenance_guard.cli import main as cli_main
from maintenance_guard.inputs import MAX_DURATION_SECONDS

OPERATIONS = [
    "caption_generation",
    "job_creation",
    "platform_operations",
    "batch_operations",
    "user_data_modification",
    "image_processing",
    "read",
    "admin",
]
HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Any character, with unpaired surrogates (which cannot be encoded as UTF-8) made common.
WILD_CHARS = st.one_of(
    st.characters(),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, blacklist_categories=()),
)

modes = st.one_of(
    st.sampled_from(["normal", "emergency", "test", "NORMAL", " test "]),
    st.sampled_from(list(MaintenanceMode)),
    st.text(max_size=12),
    st.none(),
    st.integers(),
)
reasons = st.one_of(
    st.text(max_size=600),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=490, max_size=520),
    st.sampled_from(["<script>alert(1)</script>", "\x00\x1b[31m", " ", "ok\u2028x", "a\ud800b"]),
    st.text(alphabet=WILD_CHARS, max_size=20),  # surrogates too
    st.none(),
    st.integers(),
    st.binary(max_size=10),
)
durations = st.one_of(
    st.none(),
    st.integers(min_value=-10, max_value=MAX_DURATION_SECONDS + 10),
    st.integers(),  # unbounded: ints beyond float range included
    st.sampled_from([10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1h30m", "90s", "2d", "8d", "0", "-5", "1.5", "soon", "", "1h 30m", "9" * 40]),
    st.text(max_size=10),
    st.booleans(),
)
operations = st.one_of(
    st.none(),
    st.lists(st.sampled_from(OPERATIONS), max_size=4),
    st.lists(st.text(max_size=10), max_size=3),
    st.text(max_size=10),
)
actors = st.one_of(
    st.none(),
    st.text(max_size=120),
    st.integers(),
    st.text(alphabet=WILD_CHARS, max_size=10),
)

# Mostly-valid calls, so accepted calls are exercised as much as refused ones.
valid_calls = st.fixed_dictionaries(
    {
        "mode": st.sampled_from(["normal", "emergency", "test", MaintenanceMode.NORMAL]),
        "reason": st.one_of(
            st.text(min_size=1, max_size=450),
            st.text(alphabet=WILD_CHARS, min_size=1, max_size=40),
        ).filter(lambda r: r.strip()),
        "duration": st.one_of(
            st.none(),
            st.integers(min_value=1, max_value=MAX_DURATION_SECONDS),
            st.sampled_from(["90s", "30m", "1h30m", "2d"]),
        ),
        "by": st.one_of(
            st.none(),
            st.text(max_size=80),
            st.text(alphabet=WILD_CHARS, max_size=10),
        ),
        "auto_end": st.just(False),
        "ops": st.one_of(st.none(), st.lists(st.sampled_from(OPERATIONS), min_size=1, max_size=3)),
    }
)
arbitrary_calls = st.fixed_dictionaries(
    {
        "mode": modes,
        "reason": reasons,
        "duration": durations,
        "by": actors,
        "auto_end": st.booleans(),
        "ops": operations,
    }
)


def stored(client: redis.Redis, guard: MaintenanceGuard) -> tuple[dict[str, str], int]:
    store: Any = guard.store
    return client.hgetall(store.state_key), int(client.xlen(store.events_key))


def test_arbitrary_enable_calls_give_a_valid_state_or_invalid_input_and_change_nothing(
    make_guard: Callable[..., MaintenanceGuard], redis_client: redis.Redis
) -> None:
    guard = make_guard()
    guard.enable("test", reason="baseline")
    outcomes = {"ok": 0, "refused": 0}

    @HYPOTHESIS
    @given(call=st.one_of(valid_calls, arbitrary_calls))
    def check(call: dict[str, Any]) -> None:
        mode, reason, duration = call["mode"], call["reason"], call["duration"]
        by, auto_end, ops = call["by"], call["auto_end"], call["ops"]
        before, events_before = stored(redis_client, guard)
        try:
            status = guard.enable(
                mode, reason=reason, duration=duration, by=by, auto_end=auto_end, operations=ops
            )
        except InvalidInput as exc:
            assert str(exc)  # a clear message
            outcomes["refused"] += 1
            assert stored(redis_client, guard) == (before, events_before)
            return
        outcomes["ok"] += 1
        # Accepted: the stored state is exactly what was asked, and one event was logged.
        after, events_after = stored(redis_client, guard)
        assert events_after == events_before + 1
        fresh = MaintenanceGuard(guard.store, guard.settings).status(with_jobs=False)
        assert fresh.version == status.version == int(after["version"])
        assert fresh.mode is MaintenanceMode.parse(mode)
        assert isinstance(reason, str) and fresh.reason == status.reason
        assert 1 <= len(fresh.reason) <= 500
        assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in fresh.reason)
        if duration is None:
            assert fresh.estimated_duration is None
        else:
            assert fresh.estimated_duration is not None
            assert 1 <= fresh.estimated_duration <= MAX_DURATION_SECONDS
        if ops:
            assert fresh.mode is not MaintenanceMode.EMERGENCY
            assert set(fresh.blocked_operations) <= set(OPERATIONS)
        assert fresh.enabled_by and len(fresh.enabled_by) <= 100

    check()
    # The strategies must really exercise both sides, or the test proves little.
    assert outcomes["ok"] >= 5 and outcomes["refused"] >= 20, outcomes


cli_words = st.one_of(
    st.sampled_from(
        [
            "--mode",
            "normal",
            "emergency",
            "test",
            "bogus",
            "--reason",
            "--duration",
            "1h",
            "-5",
            "0",
            "abc",
            "--operation",
            "job_creation",
            "nope",
            "--by",
            "--auto-end",
            "--json",
            "--limit",
            "--since",
            "100000",
            "<script>",
            "",
        ]
    ),
    st.text(max_size=15),
)
cli_commands = st.tuples(
    st.sampled_from(["enable", "disable", "status", "events", "nonsense"]),
    st.lists(cli_words, max_size=8),
)


def test_arbitrary_cli_arguments_exit_0_or_2_without_traceback_and_refusals_change_nothing(
    redis_url: str,
    key_prefix: str,
    make_guard: Callable[..., MaintenanceGuard],
    redis_client: redis.Redis,
) -> None:
    guard = make_guard()
    guard.enable("test", reason="baseline")
    runner = CliRunner()
    codes: dict[int, int] = {}

    @HYPOTHESIS
    @given(command=cli_commands)
    def check(command: tuple[str, list[str]]) -> None:
        name, words = command
        args = ["--redis-url", redis_url, "--prefix", key_prefix, name, *words]
        before = stored(redis_client, guard)
        result = runner.invoke(cli_main, args, catch_exceptions=True)
        code = result.exit_code
        codes[code] = codes.get(code, 0) + 1
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"{args!r} raised {result.exception!r}") from result.exception
        assert code in (0, 2), (args, code, result.output)
        assert "Traceback" not in result.output
        if code == 2:
            assert stored(redis_client, guard) == before, args
            assert result.output.count("\n") <= 2, (args, result.output)  # one clear line

    check()
    assert codes.get(0, 0) >= 3 and codes.get(2, 0) >= 20, codes


@pytest.mark.parametrize(
    "args",
    [
        ["enable", "--reason", "x" * 501],
        ["enable", "--reason", "ok", "--duration", "8d"],
        ["enable", "--reason", "ok", "--mode", "emergency", "--operation", "job_creation"],
        ["enable", "--reason", "ok", "--auto-end"],
        ["enable", "--reason", "\x01\x02"],
        ["enable", "--reason", os.fsdecode(b"bad \xff byte")],  # not UTF-8 on the command line
        ["enable", "--reason", "ok", "--by", os.fsdecode(b"\xfe")],
        ["events", "--limit", "0"],
        ["status", "--bogus"],
        ["disable", "\n", " "],  # click quotes the extra arguments, line break included
        ["enable", "--reason", "\u200b\u200b\u200b"],  # zero-width spaces: empty
        ["enable", "--reason", "\u202e\u2066 \ufeff"],  # bidi controls and a BOM: empty
    ],
)
def test_bad_cli_input_in_a_real_process_is_one_line_exit_2_and_changes_nothing(
    cli_env: dict[str, str], guard: MaintenanceGuard, redis_client: redis.Redis, args: list[str]
) -> None:
    guard.enable("test", reason="baseline")
    before = stored(redis_client, guard)
    done = subprocess.run(
        [sys.executable, "-m", "maintenance_guard.cli", *args],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1
    assert stored(redis_client, guard) == before
