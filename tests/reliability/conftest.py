"""Fixtures of the reliability suite: helper OS processes that are always killed afterwards."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import ROOT

# Fault durations: short by default so the suite stays quick; MG_LONG_FAULTS=1 gives the
# full 30 s outage the issue describes.
LONG_FAULTS = os.environ.get("MG_LONG_FAULTS") == "1"
OUTAGE_SECONDS = 30.0 if LONG_FAULTS else 6.0


class Proc:
    """A child process whose stdout lines are collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        full_env = dict(os.environ if env is None else env)
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.all_lines: list[str] = []
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.all_lines.append(line)
            self.lines.put(line)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    def next_line(self, timeout: float = 20.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no output within {timeout}s; stderr: {self.stderr_lines[-20:]}"
            ) from None

    def expect(self, prefix: str, timeout: float = 20.0) -> str:
        """Wait for the next line starting with ``prefix``, skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(0.01, deadline - time.monotonic()))
            if line.startswith(prefix):
                return line

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def spawn() -> Iterator[Callable[..., Proc]]:
    """Start helper processes (``spawn(*argv)``); every one is killed at teardown."""
    made: list[Proc] = []

    def make(*args: str, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(list(args), env)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.kill()


def actor(role: str, url: str, prefix: str, *args: object) -> list[str]:
    """The argv of a `tests.reliability.actor` helper process."""
    return [sys.executable, "-m", "tests.reliability.actor", role, url, prefix, *map(str, args)]
