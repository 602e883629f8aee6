"""cli/_datadir.py: waiting for a data directory another process holds.

The wait sleeps until the holder lets go (it costs no CPU), says whom it waits for once
it has lasted ``LOCK_NOTICE_S`` (and not before), and ends after ``LOCK_WAIT_S`` with an
error that names the holder and what to do.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import click
import pytest
import trio
from anyio.abc import TaskStatus

from headwater.cli._datadir import LOCK_FILE, LOCK_NOTICE_S, LOCK_WAIT_S, open_waiting
from headwater.cli._watch import LockWatcher
from headwater.store import open_store

from .helpers import HEADWATER, Headwater
from .test_follow import Follower

# --- the wait's steps, on trio's virtual clock --------------------------------------------


async def hold_for(data: Path, seconds: float, *, task_status: TaskStatus[None]) -> None:
    """Hold ``data`` (a real store, in this process) for ``seconds``."""
    async with open_store(data):
        task_status.started()
        await anyio.sleep(seconds)


@contextlib.contextmanager
def real_time_limit(seconds: float) -> Iterator[None]:
    """Fail the test if its body takes ``seconds`` of real time.

    The virtual clock moves only while every task sleeps; a waiter that never sleeps (one
    that wakes itself) would stop it, and the test would hang instead of failing.
    """
    token = trio.lowlevel.current_trio_token()
    with trio.CancelScope() as scope:
        timer = threading.Timer(seconds, token.run_sync_soon, [scope.cancel])
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
    if scope.cancelled_caught:
        pytest.fail(f"the wait never slept: {seconds:g} s of real time passed")


async def wait_for_store(data: Path, held_s: float) -> float | click.ClickException:
    """Open ``data`` while a task holds it for ``held_s``; return how long the open waited,
    or the error it gave up with."""
    async with open_store(data):
        pass  # the directory exists
    with LockWatcher(data, LOCK_FILE) as watcher, real_time_limit(30):
        async with anyio.create_task_group() as tg:
            await tg.start(hold_for, data, held_s)
            started = anyio.current_time()
            try:
                async with open_waiting(data, watcher, writer=False):
                    return anyio.current_time() - started
            except click.ClickException as exc:
                return exc  # once the holder has let go, on its own
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("held_s", "noticed"),
    [(0.3, False), (LOCK_NOTICE_S * 0.99, False), (LOCK_NOTICE_S * 1.5, True), (9.0, True)],
)
async def test_the_waiting_notice_comes_after_its_delay_only(
    tmp_path: Path,
    autojump_clock: object,
    capsys: pytest.CaptureFixture[str],
    held_s: float,
    noticed: bool,
) -> None:
    waited = await wait_for_store(tmp_path, held_s)
    assert waited == pytest.approx(held_s)  # woken by the holder letting go, not by a timer
    notices = [line for line in capsys.readouterr().err.splitlines() if line]
    if noticed:
        assert len(notices) == 1, notices
        assert notices[0].startswith(f"waiting for {tmp_path}: in use by pid {os.getpid()} (")
        assert f"(waiting up to {LOCK_WAIT_S:g} s)" in notices[0]
    else:
        assert notices == []


async def test_a_wait_ends_with_an_error_naming_the_holder(
    tmp_path: Path, autojump_clock: object, capsys: pytest.CaptureFixture[str]
) -> None:
    error = await wait_for_store(tmp_path, held_s=LOCK_WAIT_S * 2)
    assert isinstance(error, click.ClickException)
    message = error.format_message()
    assert message.startswith(f"data directory {tmp_path} is in use by pid {os.getpid()} (")
    assert f"did not let go within {LOCK_WAIT_S:g} s" in message
    assert f"stop it (kill {os.getpid()}) or let it finish, then run this again" in message
    assert len(capsys.readouterr().err.splitlines()) == 1  # the one notice


# --- the real commands: CPU time while they wait -----------------------------------------

HOLDER = """
import sys

import anyio

from headwater.store import NewRecord, open_store


async def main(path):
    async with open_store(path) as store:
        await store.append("t", [NewRecord(value=b'{"n": 1}')])
        print("held", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the test closes stdin


anyio.run(main, sys.argv[1])
"""


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Waiter:
    """A headwater command that will wait for the data directory; its CPU time once waiting."""

    def __init__(self, data: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [HEADWATER, "--data", str(data), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.stderr = b""
        self.noticed_at = self.cpu_at_notice = 0.0

    def await_notice(self) -> None:
        """Read stderr until the waiting notice; note the time and the CPU spent so far."""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while b"waiting for" not in self.stderr:
            assert select.select([fd], [], [], 60)[0], "no notice in time"
            chunk = os.read(fd, 65536)
            assert chunk, f"exited before waiting: {self.stderr!r}"
            self.stderr += chunk
        self.noticed_at = time.monotonic()
        self.cpu_at_notice = cpu_seconds(self.proc.pid)

    def finish(self) -> tuple[int, list[str], float, float]:
        """Reap it: return its status, stderr lines, and wall and CPU seconds since the notice."""
        assert self.proc.stderr is not None
        self.stderr += self.proc.stderr.read()
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.proc.stderr.close()
        cpu = usage.ru_utime + usage.ru_stime - self.cpu_at_notice
        wall = time.monotonic() - self.noticed_at
        return self.proc.returncode, self.stderr.decode().splitlines(), wall, cpu


@pytest.mark.slow
def test_waiting_costs_no_cpu_ends_and_names_the_holder(
    hw: Headwater, data: Path, tmp_path: Path
) -> None:
    assert hw("topics", "create", "t").returncode == 0
    assert hw("produce", "t", input='{"n": 0}\n').returncode == 0
    follower = Follower(data, "t")
    assert follower.next_line() == {"n": 0}  # caught up: it let go of the directory
    script = tmp_path / "hold_data.py"
    script.write_text(HOLDER)
    holder = subprocess.Popen(
        [sys.executable, str(script), str(data)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        # As a refused writer does (it opened the lock file for writing and closed it): the
        # follower takes it for news, and waits for the directory the holder has.
        os.close(os.open(data / LOCK_FILE, os.O_RDWR))
        follower_cpu = cpu_seconds(follower.proc.pid)
        window_start = time.monotonic()
        waiters = [
            Waiter(data, "topics", "list"),
            Waiter(data, "produce", "t"),
            Waiter(data, "groups", "describe", "g"),
            Waiter(data, "consume", "t", "--follow"),
        ]
        for waiter in waiters:
            waiter.await_notice()
        for waiter in waiters:
            status, lines, wall, cpu = waiter.finish()
            assert status == 1, lines
            assert len(lines) == 2, lines  # the notice, then the error
            assert lines[0].startswith(f"waiting for {data}: in use by pid {holder.pid} (")
            assert str(script) in lines[0]
            assert lines[1].startswith(
                f"headwater: error: data directory {data} is in use by pid {holder.pid} ("
            )
            assert f"stop it (kill {holder.pid}) or let it finish" in lines[1]
            assert cpu < 0.1 * wall, (waiter.proc.args, cpu, wall)
        # All the while, the follower slept too.
        window = time.monotonic() - window_start
        follower_cpu = cpu_seconds(follower.proc.pid) - follower_cpu
        assert follower_cpu < 0.1 * window, (follower_cpu, window)
        assert follower.proc.poll() is None
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    try:
        assert follower.next_line() == {"n": 1}  # the holder let go: the follower reads on
    finally:
        status, stderr = follower.stop(2)
    assert (status, stderr) == (0, "")
