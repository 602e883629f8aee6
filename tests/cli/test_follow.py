"""``consume --follow`` across processes, signals, and the data directory's lock."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import anyio
import pytest

from headwater.cli._datadir import LOCK_FILE
from headwater.cli._watch import LockWatcher

from .helpers import HEADWATER, Headwater


class Follower:
    """A ``headwater consume --follow`` process whose stdout lines can be awaited."""

    def __init__(self, data: Path, *args: str, argv: list[str] | None = None) -> None:
        """Follow with ``consume ARGS... --follow`` on ``data``, or run ``argv`` as given."""
        self.proc = subprocess.Popen(
            argv or [HEADWATER, "--data", str(data), "consume", *args, "--follow"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._buffer = b""

    def next_line(self, timeout_s: float = 15.0) -> dict[str, object]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            assert left > 0, "no line from the follower in time"
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                assert chunk, f"the follower exited: {self.stop(signal.SIGTERM)}"
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)  # type: ignore[no-any-return]

    def stop(self, signum: int | None) -> tuple[int, str]:
        if signum is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            status = self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        assert self.proc.stderr is not None
        stderr = self.proc.stderr.read().decode()
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.proc.stderr.close()
        return status, stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_follow_sees_records_produced_later(hw: Headwater, data: Path, signum: int) -> None:
    assert hw("topics", "create", "f", "-p", "2").returncode == 0
    assert hw("produce", "f", input='{"n": 0}\n').returncode == 0
    follower = Follower(data, "f", "--show-meta")
    try:
        assert follower.next_line()["value"] == {"n": 0}  # caught up, now waiting
        produced = hw("produce", "f", "--key", "n", input='{"n": 1}\n{"n": 2}\n')
        assert produced.returncode == 0, produced.stderr
        got = {json.dumps(follower.next_line()["value"]) for _ in range(2)}
        assert got == {'{"n": 1}', '{"n": 2}'}
    finally:
        status, stderr = follower.stop(signum)
    assert (status, stderr) == (0, "")
    # The follower closed the store cleanly: everything is still there.
    assert len(hw("consume", "f").stdout.splitlines()) == 3


def await_a_close(watcher: LockWatcher, timeout_s: float = 60.0) -> None:
    """Wait (on inotify) until some process closes the watched lock file."""

    async def wait() -> None:
        with anyio.fail_after(timeout_s):
            await watcher.wait()

    anyio.run(wait, backend="trio")


def test_follow_stops_after_max(hw: Headwater, data: Path) -> None:
    assert hw("topics", "create", "f").returncode == 0
    assert hw("produce", "f", input='{"n": -1}\n').returncode == 0  # before: not from latest
    with LockWatcher(data, LOCK_FILE) as watcher:
        follower = Follower(data, "f", "--from", "latest", "--max", "2")
        try:
            # The follower has read the directory (it knows where "latest" is) once it lets
            # go of it: the first close of the lock file since it started. Producing only
            # then, no producer holds the directory while the follower starts.
            await_a_close(watcher)
            for n in range(2):
                produced = hw("produce", "f", input=json.dumps({"n": n}) + "\n")
                assert produced.returncode == 0, produced.stderr
            assert [follower.next_line(), follower.next_line()] == [{"n": 0}, {"n": 1}]
            status, stderr = follower.stop(None)  # it stops by itself after --max 2
        finally:
            if follower.proc.poll() is None:
                follower.stop(signal.SIGKILL)
    assert (status, stderr) == (0, "")


def test_a_busy_data_directory_is_waited_for(hw: Headwater, data: Path) -> None:
    assert hw("topics", "create", "t").returncode == 0
    fd = os.open(data / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as another headwater process would hold it
    try:
        waiting = subprocess.Popen(
            [HEADWATER, "--data", str(data), "topics", "list"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert waiting.stderr is not None
        notice = waiting.stderr.readline()  # it says so once it has waited a while
        assert notice.startswith(b"waiting for "), notice
    finally:
        os.close(fd)  # wakes the waiting command
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert err == b""
    assert b" t " in out
