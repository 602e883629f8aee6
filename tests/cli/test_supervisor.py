"""The supervisor of ``headwater worker`` with real processes that stand in for workers
(small Python scripts: the supervisor runs any command), so that each behaviour is shown
quickly: a killed worker restarted, a failing one given up on, a graceful stop by signal
and by the end of the workers' input, a finished worker left alone."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable

import anyio
import click
import pytest

from headwater.cli._restarts import RestartPolicy
from headwater.cli._supervisor import Supervisor

#: A stand-in worker: says it is up (with its pid), then behaves as argv[1] says.
SCRIPT = r"""
import os, signal, sys, time

mode, number = sys.argv[1], sys.argv[2]
if mode == "fail":
    sys.stderr.write("headwater: error: topic 'x' does not exist\n")
    sys.exit(1)
if mode == "finish":
    sys.stderr.write(f"headwater: worker says done {number}\n")
    sys.exit(0)
if mode == "deaf":  # ignores SIGTERM: only the end of its input stops it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    def stop(signum, frame):
        sys.stderr.write(f"headwater: stopping on {signal.Signals(signum).name}\n")
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
sys.stderr.write(f"headwater: up {number} {os.getpid()}\n")
sys.stderr.flush()
sys.stdin.read()  # until the supervisor closes it
sys.stderr.write("headwater: input ended\n")
"""

FAST = RestartPolicy(max_restarts=3, backoff_s=0.01, backoff_max_s=0.05)


class Lines:
    """A text stream the supervisor copies worker lines to, that a test can wait on."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = anyio.Event()

    def write(self, text: str) -> int:
        self.lines.extend(text.splitlines())
        self._changed.set()
        self._changed = anyio.Event()
        return len(text)

    def flush(self) -> None:
        pass

    async def wait_for(self, predicate: Callable[[list[str]], bool]) -> None:
        while not predicate(self.lines):
            await self._changed.wait()

    def up(self) -> dict[int, list[int]]:
        """Each worker's pids, in the order they came up."""
        pids: dict[int, list[int]] = {}
        for line in self.lines:
            parts = line.split()
            if parts[3:4] == ["up"]:
                pids.setdefault(int(parts[4]), []).append(int(parts[5]))
        return pids


def supervisor(
    mode: Callable[[int], str], processes: int, out: Lines, **policy: float
) -> Supervisor:
    settings = {"max_restarts": 3, "backoff_s": 0.01, "backoff_max_s": 0.05, **policy}
    return Supervisor(
        lambda n: [sys.executable, "-c", SCRIPT, mode(n), str(n)],
        processes,
        RestartPolicy(**settings),  # type: ignore[arg-type]
        out=out,  # type: ignore[arg-type]
    )


async def test_a_killed_worker_is_restarted_and_a_signal_stops_all_gracefully(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "headwater.worker")
    out = Lines()
    running = supervisor(lambda n: "serve", 2, out)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(running.run)
            await out.wait_for(lambda _: len(out.up()) == 2)
            victim = out.up()[2][0]
            os.kill(victim, signal.SIGKILL)
            await out.wait_for(lambda _: len(out.up().get(2, [])) == 2)
            assert running.statistics().restarts == {1: 0, 2: 1}
            running.stop(signal.SIGTERM)
    restarts = [r.getMessage() for r in caplog.records if "restarting" in r.getMessage()]
    assert len(restarts) == 1
    assert restarts[0].startswith(f"worker 2 (pid {victim}) was killed by SIGKILL after ")
    assert "(restart 1 of at most 3 within 60 s)" in restarts[0]
    # Both (the restarted one too) stopped on the forwarded signal, not killed.
    assert out.lines.count("headwater: worker 1: stopping on SIGTERM") == 1
    assert out.lines.count("headwater: worker 2: stopping on SIGTERM") == 1
    assert running.statistics().running == 0


async def test_a_worker_that_keeps_failing_is_given_up_on_and_the_others_stopped() -> None:
    out = Lines()
    running = supervisor(lambda n: "fail" if n == 2 else "serve", 2, out, max_restarts=2)
    with anyio.fail_after(60), pytest.raises(click.ClickException) as raised:
        await running.run()
    message = raised.value.format_message()
    assert message.startswith("worker 2 keeps failing: 3 failures within 60 s, more than the 2 ")
    assert message.endswith("exited with status 1 (error: topic 'x' does not exist)")
    assert "\n" not in message
    assert running.statistics().restarts == {1: 0, 2: 2}
    assert "headwater: worker 1: stopping on SIGTERM" in out.lines
    assert out.lines.count("headwater: worker 2: error: topic 'x' does not exist") == 3


async def test_a_worker_that_ignores_the_signal_stops_when_its_input_ends() -> None:
    out = Lines()
    running = supervisor(lambda n: "deaf", 1, out)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(running.run)
            await out.wait_for(lambda _: len(out.up()) == 1)
            running.stop(signal.SIGTERM)
    assert out.lines[-1] == "headwater: worker 1: input ended"
    assert running.statistics().restarts == {1: 0}


async def test_workers_that_finish_are_not_started_again() -> None:
    out = Lines()
    running = supervisor(lambda n: "finish", 3, out)
    with anyio.fail_after(60):
        await running.run()
    assert sorted(out.lines) == [f"headwater: worker {n}: worker says done {n}" for n in (1, 2, 3)]
    assert running.statistics().restarts == {1: 0, 2: 0, 3: 0}


def test_at_least_one_process() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Supervisor(lambda n: ["true"], 0, FAST)
