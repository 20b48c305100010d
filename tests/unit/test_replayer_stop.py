"""`Replayer.stop` (used by `uninstall`): the thread ends, a pass under way stops after
the entry it is sending, and nothing is replayed afterwards."""

from __future__ import annotations

import threading
import time

from maintenance_guard.deferred import DeferredEntry, MemoryDeferredQueue, Replayer


def entry(n: int) -> DeferredEntry:
    return DeferredEntry(
        id=f"id-{n}", kind="task", task="t", operation=None, source="test", deferred_at=0.0
    )


def test_stop_ends_the_pass_under_way_and_later_requests_replay_nothing() -> None:
    queue = MemoryDeferredQueue()
    for n in range(3):
        assert queue.park(entry(n))
    sending = threading.Event()
    release = threading.Event()
    sent: list[str] = []

    def send(e: DeferredEntry) -> None:
        sending.set()
        release.wait(5)
        sent.append(e.id)

    replayer = Replayer(queue, send, lambda: True)
    replayer.request()
    assert sending.wait(5)
    stopper = threading.Thread(target=replayer.stop)
    stopper.start()
    time.sleep(0.1)
    release.set()  # the entry being sent completes; the next two are not sent
    stopper.join(5)
    assert not stopper.is_alive()
    assert sent == ["id-0"] and [e.id for e in queue.entries()] == ["id-1", "id-2"]
    assert replayer._thread is not None and not replayer._thread.is_alive()
    replayer.request()
    time.sleep(0.2)
    assert sent == ["id-0"]
