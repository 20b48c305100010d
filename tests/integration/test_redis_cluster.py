"""Redis Cluster, for real: three masters on loopback ports (``--cluster-enabled yes``,
slots assigned and nodes met by the test), the guard on a ``redis+cluster://`` URL.

Everything the guard keeps is under one hash tag, so in one slot: the state and its
pub/sub propagation, the audit log, queue pauses, windows, the in-flight registry and
deferred work all work on a cluster. Session invalidation does not (Flask-Session's keys
are spread over every slot) and says so.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from maintenance_guard import InvalidInput, MaintenanceActive, MaintenanceGuard, MaintenanceMode
from maintenance_guard.deferred import DeferredEntry, DeferredQueue, new_entry
from maintenance_guard.inflight import InflightJob, InflightRegistry
from maintenance_guard.sessions import SessionInvalidator
from maintenance_guard.store import connect
from maintenance_guard.windows import iso_z
from tests.conftest import redis_server_binary
from tests.helpers import free_port, wait_for

SLOTS = 16384


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    directory = Path(tempfile.mkdtemp(prefix="mg-cluster-"))
    ports = [free_cluster_port() for _ in range(3)]
    processes = []
    try:
        for port in ports:
            data = directory / str(port)
            data.mkdir()
            processes.append(
                subprocess.Popen(
                    [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                     "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--save", "", "--appendonly", "no", "--dir", str(data)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        nodes = [redis.Redis(port=p, decode_responses=True) for p in ports]
        wait_for(lambda: all(_answers(n) for n in nodes), timeout=10)
        share = SLOTS // len(nodes)
        for i, node in enumerate(nodes):
            last = SLOTS if i == len(nodes) - 1 else (i + 1) * share
            node.execute_command("CLUSTER ADDSLOTS", *range(i * share, last))
        for port in ports[1:]:
            nodes[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
        wait_for(
            lambda: all(n.execute_command("CLUSTER INFO").get("cluster_state") == "ok"
                        for n in nodes),
            timeout=30,
        )  # fmt: skip
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    finally:
        for process in processes:
            process.kill()
            process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too: an
    ephemeral port above 55535 has none, and that node would never start."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _answers(node: redis.Redis) -> bool:
    try:
        return bool(node.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def cluster_guard(cluster_url: str, key_prefix: str) -> Iterator[Callable[..., MaintenanceGuard]]:
    made: list[MaintenanceGuard] = []

    def make(**settings: object) -> MaintenanceGuard:
        guard = MaintenanceGuard.from_url(cluster_url, key_prefix=key_prefix, **settings)  # type: ignore[arg-type]
        made.append(guard)
        return guard

    yield make
    for guard in made:
        guard.stop(timeout=2)
    client = connect(cluster_url)
    for key in client.scan_iter(match=f"{{{key_prefix}}}*"):
        client.delete(key)
    client.close()


def test_state_propagation_audit_pauses_and_windows_work_on_a_cluster(
    cluster_guard: Callable[..., MaintenanceGuard], key_prefix: str, cluster_url: str
) -> None:
    admin = cluster_guard(poll_interval=5)
    # A long poll: a change seen within a second came through pub/sub.
    follower = cluster_guard(poll_interval=5)
    follower.start()
    time.sleep(0.3)
    admin.enable("normal", reason="on a cluster", by="ops")
    wait_for(lambda: follower.current().mode is MaintenanceMode.NORMAL, timeout=1.5)
    assert follower.is_blocked("caption_generation")
    with pytest.raises(MaintenanceActive):
        follower.check("caption_generation", user="u1")
    admin.pause_queues(["reports"], reason="reindex", by="ops")
    window = admin.windows.add(iso_z(time.time() + 3600), "1h", reason="later", by="ops")
    admin.post_update("half way", by="ops")
    wait_for(lambda: follower.current().windows and follower.current().paused_queues, 1.5)
    admin.disable(by="ops")
    wait_for(lambda: not follower.current().is_active, timeout=1.5)
    follower.flush()
    impact = admin.impact()  # the window's tallies: pipelined into the same slot
    assert impact is not None and not impact.active and impact.distinct_users == 1
    assert impact.refused == {"caption_generation": {"python": 1}}
    types = [e.type for e in admin.events()]
    assert types == ["disabled", "progress_update", "window_scheduled", "queues_paused", "enabled"]
    assert [w.id for w in follower.current().windows] == [window.id]
    poll = admin.store.poll("probe", {"pid": 1})
    assert poll.stamp is not None and abs(poll.server_time - time.time()) < 5
    client = connect(cluster_url)
    slots = {client.keyslot(k) for k in client.scan_iter(match=f"{{{key_prefix}}}*")}
    assert len(slots) == 1, slots  # everything in one slot


def test_in_flight_records_and_deferred_work_work_on_a_cluster(
    cluster_guard: Callable[..., MaintenanceGuard],
) -> None:
    guard = cluster_guard()
    registry = InflightRegistry(guard.store, 30)
    registry.start(InflightJob("j1", "t", "read", "w1@h", 1, time.time()))
    registry.start(InflightJob("j2", "t", "read", "w1@h", 1, time.time()))
    assert {j.id for j in registry.jobs()} == {"j1", "j2"}
    registry.finish(["j1"])
    assert [j.id for j in registry.jobs()] == ["j2"]
    queue = DeferredQueue(guard.store, "cluster-broker")  # type: ignore[arg-type]
    for n in range(3):
        assert queue.park(new_entry(entry_id=f"d{n}", kind="call", task="t", operation=None,
                                    source="test", reason="x", payload={}))  # fmt: skip
    sent: list[str] = []

    def send(entry: DeferredEntry) -> None:
        sent.append(entry.id)

    report = queue.replay(send)
    assert sent == ["d0", "d1", "d2"] and len(report.sent) == 3
    assert queue.state_of("d1") == "sent"


def test_session_invalidation_says_clearly_it_does_not_work_on_a_cluster(cluster_url: str) -> None:
    with pytest.raises(InvalidInput, match="not on a Redis Cluster"):
        SessionInvalidator(connect(cluster_url))
