"""Publish-side refusal on real brokers, proven by the broker's queue length."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from celery import chain, chord, group
from celery.beat import ScheduleEntry, Scheduler

from maintenance_guard import InvalidInput, MaintenanceActive, MaintenanceGuard, UnknownOperation
from tests.helpers import wait_for
from tests.integration import celery_support
from tests.integration.celery_support import ROOT, Broker, make_app, new_queue, uninstall

broker = celery_support.broker
redis_broker = celery_support.redis_broker

MakeApp = Callable[..., object]


@pytest.fixture
def producer(
    make_guard: Callable[..., MaintenanceGuard], key_prefix: str
) -> Iterator[Callable[..., object]]:
    """Factory: a guarded producer app on a broker and queue (uninstalled afterwards)."""
    made: list[object] = []

    def make(broker: Broker, queue: str, **kwargs: object) -> object:
        guard = kwargs.pop("guard", None) or make_guard()
        app = make_app(
            broker=broker.url,
            redis_url=broker.redis_url,
            prefix=key_prefix,
            queue=queue,
            guard=guard,
            **kwargs,
        )
        made.append(app)
        return app

    yield make
    for app in made:
        uninstall(app)  # type: ignore[arg-type]


def test_blocked_tasks_are_refused_guarded_or_not_and_never_reach_the_broker(
    broker: Broker, producer: Callable[..., object], guard: MaintenanceGuard
) -> None:
    queue = new_queue(broker)
    app = producer(broker, queue, guard=guard)
    tasks = app.tasks  # type: ignore[attr-defined]
    tasks["mgtest.read"].delay("before")
    tasks["mgtest.caption"].delay("before")
    assert broker.queue_length(queue) == 2

    guard.enable("normal", reason="broker upgrade", by="test")
    with pytest.raises(MaintenanceActive) as refused:
        tasks["mgtest.guarded_caption"].delay("guarded")
    assert refused.value.operation == "caption_generation"
    assert refused.value.mode == "normal"
    assert "Caption generation" in refused.value.message
    with pytest.raises(MaintenanceActive):
        tasks["mgtest.caption"].delay("unguarded")
    with pytest.raises(MaintenanceActive):
        tasks["mgtest.caption"].apply_async(("unguarded",), countdown=5)
    with pytest.raises(MaintenanceActive):
        app.send_task("mgtest.caption", args=["by-name"])  # type: ignore[attr-defined]
    with pytest.raises(MaintenanceActive):
        app.send_task("mgtest.caption_remote_only", args=["unregistered"])  # type: ignore[attr-defined]
    assert broker.queue_length(queue) == 2

    tasks["mgtest.read"].delay("read-still-allowed")
    assert broker.queue_length(queue) == 3

    guard.disable(by="test")
    tasks["mgtest.caption"].delay("after")
    assert broker.queue_length(queue) == 4


def test_emergency_refuses_unclassified_and_read_tasks_too(
    redis_broker: Broker, producer: Callable[..., object], guard: MaintenanceGuard
) -> None:
    queue = new_queue(redis_broker)
    app = producer(redis_broker, queue, guard=guard)
    guard.enable("emergency", reason="data leak", by="test")
    with pytest.raises(MaintenanceActive):
        app.tasks["mgtest.read"].delay("read")  # type: ignore[attr-defined]
    with pytest.raises(MaintenanceActive):
        app.send_task("some.unclassified_task")  # type: ignore[attr-defined]
    assert redis_broker.queue_length(queue) == 0


def test_test_mode_publishes_everything_and_records_what_it_would_refuse(
    redis_broker: Broker, producer: Callable[..., object], guard: MaintenanceGuard
) -> None:
    queue = new_queue(redis_broker)
    app = producer(redis_broker, queue, guard=guard)
    guard.enable("test", reason="rehearsal", by="test")
    app.tasks["mgtest.caption"].delay("t1")  # type: ignore[attr-defined]
    app.tasks["mgtest.guarded_caption"].delay("t2")  # type: ignore[attr-defined]
    assert redis_broker.queue_length(queue) == 2
    guard.flush()
    counts = guard.store.read_attempt_counts()
    assert counts.get("would_block:publish:caption_generation") == 2


def test_canvas_containing_a_blocked_task_is_refused_whole(
    broker: Broker, producer: Callable[..., object], guard: MaintenanceGuard
) -> None:
    queue = new_queue(broker)
    app = producer(broker, queue, guard=guard)
    read = app.tasks["mgtest.read"]  # type: ignore[attr-defined]
    caption = app.tasks["mgtest.caption"]  # type: ignore[attr-defined]
    collect = app.tasks["mgtest.collect"]  # type: ignore[attr-defined]
    read.delay("baseline")
    assert broker.queue_length(queue) == 1

    guard.enable("normal", reason="upgrade", by="test")
    canvases = {
        "chain, blocked last": chain(read.s("a"), read.si("b"), caption.si("c")),
        "chain, blocked first": chain(caption.s("c"), read.si("a")),
        "group": group(read.s("a"), read.s("b"), caption.s("c")),
        "chord, blocked body": chord([read.s("a"), read.s("b")], collect.s("body")),
        "chord, blocked header": chord([read.s("a"), caption.s("b")], read.si("body")),
        "chain of groups": chain(group(read.s("a"), read.s("b")), group(caption.si("c"))),
        "link callback": read.signature(("a",), link=caption.si("linked")),
        "chord body on a group": group(read.s("a"), read.s("b")) | collect.s("body"),
    }
    for label, canvas in canvases.items():
        with pytest.raises(MaintenanceActive):
            canvas.apply_async()
        assert broker.queue_length(queue) == 1, f"{label}: part of the canvas was published"
    calls = {
        "task with link": lambda: read.apply_async(("a",), link=caption.si("linked")),
        "task with link_error": lambda: read.apply_async(("a",), link_error=caption.si("e")),
        "chain with call-time link": lambda: chain(read.si("a"), read.si("b")).apply_async(
            link=caption.si("linked")
        ),
        "send_task with link": lambda: app.send_task(  # type: ignore[attr-defined]
            "mgtest.read", args=["a"], link=caption.si("linked")
        ),
    }
    for label, call in calls.items():
        with pytest.raises(MaintenanceActive):
            call()
        assert broker.queue_length(queue) == 1, f"{label}: published"

    # Every way of calling a canvas, not only apply_async: Celery's chord.__call__ passes
    # the body inside the kwargs argument of apply_async.
    header = [read.s("a"), read.s("b")]
    called = {
        "chord(header)(body)": lambda: chord(header)(collect.s("body")),
        "chord(header, body)()": lambda: chord(header, collect.s("body"))(),
        "chord(header).apply_async(kwargs={'body': ...})": lambda: chord(header).apply_async(
            (), {"body": collect.s("body")}
        ),
        "(group | task)()": lambda: (group(read.s("a"), read.s("b")) | collect.s("body"))(),
        "group with one blocked task, called": lambda: group(read.s("a"), caption.s("b"))(),
        "group.delay": lambda: group(read.s("a"), caption.s("b")).delay(),
        "chain containing a group, called": lambda: chain(
            read.si("a"), group(read.si("b"), caption.si("c"))
        )(),
        "chain.delay": lambda: chain(read.si("a"), caption.si("c")).delay(),
        "link via signature, delay": lambda: read.signature(
            ("a",), link=caption.si("linked")
        ).delay(),
        "link_error via signature, apply_async": lambda: read.signature(
            ("a",), link_error=caption.si("e")
        ).apply_async(),
        "chunks": lambda: caption.chunks([("a",), ("b",)], 1).apply_async(),
        "chunks, delay": lambda: caption.chunks([("a",), ("b",)], 1).delay(),
        "starmap": lambda: caption.starmap([("a",), ("b",)]).apply_async(),
        "map, delay": lambda: caption.map(["a", "b"]).delay(),
        "send_task of a blocked task": lambda: app.send_task(  # type: ignore[attr-defined]
            "mgtest.caption", args=["a"]
        ),
    }
    for label, call in called.items():
        with pytest.raises(MaintenanceActive):
            call()
        assert broker.queue_length(queue) == 1, f"{label}: part of the canvas was published"

    # A canvas of allowed tasks still goes out.
    group(read.s("x"), read.s("y")).apply_async()
    assert broker.queue_length(queue) == 3


def test_beat_publish_is_refused_and_logged_while_beat_keeps_running(
    redis_broker: Broker,
    producer: Callable[..., object],
    guard: MaintenanceGuard,
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = new_queue(redis_broker)
    app = producer(redis_broker, queue, guard=guard)
    scheduler = Scheduler(app, lazy=True)
    blocked = ScheduleEntry(
        name="nightly-captions", task="mgtest.caption", schedule=60, args=("beat",), app=app
    )
    allowed = ScheduleEntry(
        name="reports", task="mgtest.read", schedule=60, args=("beat",), app=app
    )
    guard.enable("normal", reason="upgrade", by="test")
    with caplog.at_level(logging.WARNING):
        scheduler.apply_entry(blocked, producer=None)  # beat's own publish path; no raise
        scheduler.apply_entry(allowed, producer=None)
    assert redis_broker.queue_length(queue) == 1  # only the allowed entry
    assert any("mgtest.caption" in r.getMessage() for r in caplog.records)


def test_bad_on_maintenance_value_is_refused_and_publishes_nothing(
    redis_broker: Broker, producer: Callable[..., object], guard: MaintenanceGuard
) -> None:
    queue = new_queue(redis_broker)
    app = producer(redis_broker, queue, guard=guard)
    with pytest.raises(InvalidInput, match="on_maintenance"):
        app.tasks["mgtest.caption"].apply_async(("x",), on_maintenance="later")  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput, match="on_maintenance"):
        app.tasks["mgtest.guarded_caption"].apply_async(("x",), on_maintenance=1)  # type: ignore[attr-defined]
    assert redis_broker.queue_length(queue) == 0


def test_guarded_task_with_unknown_operation_is_a_clear_error(
    redis_broker: Broker, producer: Callable[..., object], guard: MaintenanceGuard
) -> None:
    from maintenance_guard.celery import GuardedTask

    queue = new_queue(redis_broker)
    app = producer(redis_broker, queue, guard=guard)

    @app.task(shared=False, name="mgtest.typo", base=GuardedTask, operation="caption_generatoin")  # type: ignore[attr-defined]
    def typo() -> None: ...

    with pytest.raises(UnknownOperation, match="caption_generatoin"):
        typo.delay()
    assert redis_broker.queue_length(queue) == 0


def test_a_second_process_refuses_once_maintenance_is_enabled(
    redis_broker: Broker, cli_env: dict[str, str], key_prefix: str, guard: MaintenanceGuard
) -> None:
    """Propagation: a separate producer process refuses after `enable` here.

    Prints the measured delay (enable returned -> first refusal in the other process).
    """
    queue = new_queue(redis_broker)
    script = textwrap.dedent(
        f"""
        import sys, time
        from maintenance_guard import MaintenanceActive
        from tests.integration.celery_support import make_app
        app = make_app(broker={redis_broker.url!r}, redis_url={redis_broker.redis_url!r},
                       prefix={key_prefix!r}, queue={queue!r})
        app.send_task("mgtest.read", args=["warm-up"])
        print("ready", flush=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                app.tasks["mgtest.guarded_caption"].delay("probe")
            except MaintenanceActive:
                print("refused", repr(time.time()), flush=True)
                sys.exit(0)
        sys.exit(1)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        enabled_at = time.time()
        guard.enable("normal", reason="propagation", by="test")
        line = proc.stdout.readline().split()
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert line[0] == "refused"
    delay_ms = (float(line[1]) - enabled_at) * 1000
    print(f"\npropagation enable -> refusal in another process: {delay_ms:.1f} ms")
    before = redis_broker.queue_length(queue)
    client = redis.Redis.from_url(redis_broker.url)
    client.close()
    # Nothing published after the refusal: the probe loop stopped at the first refusal.
    wait_for(lambda: redis_broker.queue_length(queue) == before, timeout=1)


def test_unique_queue_names_do_not_collide() -> None:
    assert len({new_queue(Broker("redis", "", "")) for _ in range(100)}) == 100


def test_install_refuses_bad_celery_config(redis_url: str, key_prefix: str) -> None:
    from celery import Celery

    from maintenance_guard.celery import install, installation_of

    for conf, error in (
        ({"maintenance_guard_worker_policy": "drop"}, InvalidInput),
        ({"maintenance_guard_task_operations": {"x.*": "captions"}}, UnknownOperation),
        ({"maintenance_guard_heartbeat_interval": 60.0}, InvalidInput),
    ):
        app = Celery("bad", set_as_current=False)
        app.conf.update(
            maintenance_guard_redis_url=redis_url,
            maintenance_guard_key_prefix=key_prefix,
            **conf,
        )
        with pytest.raises(error):
            install(app)
        assert installation_of(app) is None  # nothing connected
