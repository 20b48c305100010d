"""Redis under Sentinel, for real: one master, one replica and three sentinels on loopback
ports, started by the test (``redis-server --sentinel``). The master is SIGKILLed during
maintenance: no process ever reads maintenance as off, refusals go on from memory, the
switch works again once a sentinel has promoted the replica, and what was written (and
replicated) before the kill is still there.

What asynchronous replication can lose: a write the master acknowledged in the moment
before it died, not yet copied to the replica. The test waits for the replica to hold
every write (``WAIT``) before the kill, so it checks that nothing *replicated* is lost,
and that the guard needs nothing more than what Redis replicated.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from maintenance_guard import ConcurrentChange, MaintenanceGuard, StoreUnavailable
from maintenance_guard.deferred import DeferredQueue, new_entry
from tests.conftest import redis_server_binary
from tests.helpers import free_port, wait_for
from tests.reliability.conftest import Proc, actor

pytestmark = pytest.mark.slow

SERVICE = "mgmaster"


@dataclass
class SentinelSet:
    directory: Path
    master_port: int = field(default_factory=free_port)
    replica_port: int = field(default_factory=free_port)
    sentinel_ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def _run(self, name: str, args: list[str]) -> None:
        log = open(self.directory / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        self.processes[name] = subprocess.Popen(
            [redis_server_binary(), *args], stdout=log, stderr=subprocess.STDOUT
        )

    def start(self) -> None:
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        for name, port in (("master", self.master_port), ("replica", self.replica_port)):
            data = self.directory / name
            data.mkdir()
            extra = [] if name == "master" else ["--replicaof", "127.0.0.1", str(self.master_port)]
            self._run(name, ["--port", str(port), "--dir", str(data), *common, *extra])
        for i, port in enumerate(self.sentinel_ports):
            conf = self.directory / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self._run(f"sentinel-{i}", [str(conf), "--sentinel"])
        replica = redis.Redis(port=self.replica_port, decode_responses=True)

        def synced() -> bool:
            try:
                return replica.info("replication").get("master_link_status") == "up"
            except redis.RedisError:
                return False

        wait_for(synced, timeout=30)
        for port in self.sentinel_ports:
            sentinel = redis.Redis(port=port, decode_responses=True)
            wait_for(lambda s=sentinel: _knows_replica(s), timeout=30)  # type: ignore[misc]

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)


def _knows_replica(sentinel: redis.Redis) -> bool:
    try:
        return len(sentinel.sentinel_slaves(SERVICE)) == 1
    except redis.RedisError:
        return False


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    directory = Path(tempfile.mkdtemp(prefix="mg-sentinel-"))
    found = SentinelSet(directory)
    try:
        found.start()
        yield found
    finally:
        found.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_killing_the_master_during_maintenance_never_reads_as_off_and_the_switch_comes_back(
    sentinels: SentinelSet, key_prefix: str, spawn: Callable[..., Proc]
) -> None:
    watchers = [spawn(*actor("watch", sentinels.url, key_prefix, 0.2)) for _ in range(2)]
    for w in watchers:
        w.expect("ready")
    admin = MaintenanceGuard.from_url(sentinels.url, key_prefix=key_prefix, poll_interval=0.2)
    web = MaintenanceGuard.from_url(sentinels.url, key_prefix=key_prefix, poll_interval=0.2)
    try:
        web.start()
        on = admin.enable("normal", reason="failover drill", by="ops")
        for w in watchers:
            w.expect(f"seen {on.version} normal True", timeout=10)
        wait_for(lambda: web.is_blocked("caption_generation"), timeout=5)
        parked = DeferredQueue(admin.store, "sentinel-test")  # type: ignore[arg-type]
        entry = new_entry(entry_id="job-1", kind="call", task="t", operation=None,
                          source="test", reason="drill", payload={"args": "[]"})  # fmt: skip
        assert parked.park(entry)
        events_before = [e.id for e in admin.events(limit=50)]
        master = redis.Redis(port=sentinels.master_port)
        assert master.execute_command("WAIT", 1, 2000) == 1  # the replica holds it all
        master.close()

        killed_at = time.monotonic()
        sentinels.kill("master")
        blocked_throughout = True
        disabled_after = None
        while time.monotonic() - killed_at < 60:
            blocked_throughout &= web.is_blocked("caption_generation")  # memory, never raises
            try:
                admin.disable(by="ops", reason="after failover")
            except (StoreUnavailable, ConcurrentChange):
                time.sleep(0.05)
                continue
            disabled_after = time.monotonic() - killed_at
            break
        assert disabled_after is not None, "the switch never came back after the failover"
        assert blocked_throughout, "a process let work through while the master was down"
        print(f"first successful disable {disabled_after:.2f} s after the master was killed")
        promoted = redis.Redis(port=sentinels.replica_port, decode_responses=True)
        assert promoted.info("replication")["role"] == "master"

        for w in watchers:
            w.expect("seen", timeout=15)  # maintenance off reached them after the failover
        for w in watchers:
            modes = [line.split()[2] for line in w.all_lines if line.startswith("seen ")]
            # Every state a watcher saw before the disable was maintenance on.
            assert modes[:-1] == ["normal"] * (len(modes) - 1) and modes[-1] == "None", modes
        wait_for(lambda: not web.current().is_active, timeout=10)
        assert parked.state_of("job-1") == "parked"
        after = [e.id for e in admin.events(limit=60)]
        assert set(events_before) <= set(after)  # the audit log kept every replicated event
        assert admin.events(limit=1)[0].type == "disabled"
    finally:
        for g in (admin, web):
            g.stop(timeout=2)
