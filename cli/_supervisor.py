"""``headwater worker``'s supervisor: N worker processes, kept running, stopped together.

Theory of operation
-------------------
:class:`Supervisor` runs one task per worker slot. A slot starts its worker (a
``headwater run APP --bootstrap ...`` process, see ``_worker.py``) with
``anyio.open_process`` and waits for it to exit, copying what it writes to stderr line by
line, each line marked with the worker's number. A worker that exits 0 has finished (it
was stopped, or caught up) and is not started again. One that fails -- a non-zero exit,
or killed by a signal -- is restarted after the delay that its slot's
:class:`~headwater.cli._restarts.WorkerRestarts` decides (backoff with full jitter),
each restart logged as one line; when that says give up, the supervisor stops the other
workers and :meth:`Supervisor.run` raises a one-line error naming the worker and its last
failure.

A worker runs in a session of its own, so that a terminal's Ctrl-C reaches the
supervisor alone, which passes it on exactly once: :meth:`Supervisor.stop` sends the
signal to every worker (a first SIGINT/SIGTERM is a graceful stop: each finishes the
batches in hand, commits and leaves the group; a second, forwarded in turn, stops them
at once) and closes their standard input. The supervisor holds the writing end of each
worker's stdin for as long as the worker runs; the worker stops gracefully when it ends
(``headwater run --stop-at-end-of-input``). So a signal that reaches a worker still
starting is not lost, and a supervisor that dies (even by ``kill -9``) leaves no worker
behind. Nothing sleeps to poll: a slot waits on its process, on the stop event, or on
its restart delay.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

import anyio
import click
from anyio.abc import ByteReceiveStream, Process

from ._restarts import GiveUp, RestartPolicy, WorkerRestarts

logger = logging.getLogger("headwater.worker")

#: The exit status of a ``headwater`` command stopped by SIGINT before it could stop
#: gracefully (``_main.SIGINT_STATUS``).
_INTERRUPTED = 130
#: A worker's stderr line longer than this is copied in pieces.
_MAX_LINE = 64 * 1024


@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    """What a supervisor did so far.

    :param running: worker processes running now.
    :param restarts: restarts so far, per worker number.
    """

    running: int
    restarts: Mapping[int, int]


class Supervisor:
    """Run ``processes`` workers, restart those that fail, stop them all together.

    :param command: the argv of worker ``n`` (numbered from 1).
    :param processes: how many workers to run at once.
    :param policy: when to restart a failed worker, and when to give up.
    :param env: the workers' environment (default: this process's).
    :param out: where the workers' stderr lines are copied to.

    Concurrency: one event loop; :meth:`stop` may be called from any task in it.
    """

    def __init__(
        self,
        command: Callable[[int], Sequence[str]],
        processes: int,
        policy: RestartPolicy,
        *,
        env: Mapping[str, str] | None = None,
        out: TextIO | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self._command = command
        self._processes = processes
        self._policy = policy
        self._env = env
        self._out = out
        self._stopping = anyio.Event()
        self._running: dict[int, Process] = {}
        self._restarts = dict.fromkeys(range(1, processes + 1), 0)
        self._failure: str | None = None

    def statistics(self) -> SupervisorStatistics:
        """Return the number of running workers and the restarts so far."""
        return SupervisorStatistics(len(self._running), dict(self._restarts))

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (or the supervisor gave up)."""
        return self._stopping.is_set()

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Send ``signum`` to every worker (and close their stdin); restart none from now on.

        A first SIGINT/SIGTERM stops a worker gracefully, a second at once.
        """
        self._stopping.set()
        for process in list(self._running.values()):
            self._signal(process, signum)

    async def run(self) -> None:
        """Run the workers until every one has finished, or :meth:`stop` stopped them.

        :raises click.ClickException: if a worker kept failing (the others were
            stopped), or did not stop cleanly when asked to.
        """
        async with anyio.create_task_group() as tg:
            for number in range(1, self._processes + 1):
                tg.start_soon(self._keep_running, number)
        if self._failure is not None:
            raise click.ClickException(self._failure)

    async def _keep_running(self, number: int) -> None:
        restarts = WorkerRestarts(self._policy)
        while not self._stopping.is_set():
            started = anyio.current_time()
            pid, status, last_error = await self._run_worker(number)
            if status == 0:
                logger.info("worker %d (pid %d) finished", number, pid)
                return  # stopped, or caught up: nothing to restart
            failure = _failure(status, last_error)
            if self._stopping.is_set():
                if status not in (_INTERRUPTED, -signal.SIGINT, -signal.SIGTERM):
                    self._fail(f"worker {number} (pid {pid}) did not stop cleanly: it {failure}")
                return
            ran_s = anyio.current_time() - started
            decision = restarts.failed(started_at=started, now=anyio.current_time())
            if isinstance(decision, GiveUp):
                self._fail(
                    f"worker {number} keeps failing: {decision.failures} failures within "
                    f"{decision.window_s:g} s, more than the {self._policy.max_restarts} "
                    f"restart(s) allowed (--max-restarts), so giving up; its last run "
                    f"(pid {pid}) {failure}"
                )
                return
            self._restarts[number] += 1
            logger.warning(
                "worker %d (pid %d) %s after %.1f s: restarting it in %.2f s "
                "(restart %d of at most %d within %g s)",
                number,
                pid,
                failure,
                ran_s,
                decision.delay_s,
                decision.count,
                self._policy.max_restarts,
                self._policy.window_s,
            )
            with anyio.move_on_after(decision.delay_s):
                await self._stopping.wait()

    async def _run_worker(self, number: int) -> tuple[int, int, str | None]:
        """Run worker ``number`` until it exits; return its pid, exit status (negative: the
        signal that killed it) and the last error line it wrote."""
        process = await anyio.open_process(
            list(self._command(number)),
            stdin=subprocess.PIPE,
            stdout=None,
            stderr=subprocess.PIPE,
            env=self._env,
            start_new_session=True,
        )
        self._running[number] = process
        logger.info("worker %d started (pid %d)", number, process.pid)
        if self._stopping.is_set():  # stopped while it was being started
            self._signal(process, signal.SIGTERM)
        relay = _Relay(number, self._out or sys.stderr)
        try:
            async with anyio.create_task_group() as copying:
                assert process.stderr is not None
                copying.start_soon(relay.copy, process.stderr)  # ends at the worker's end
                async with anyio.create_task_group() as watching:
                    watching.start_soon(self._end_input_when_stopping, process)
                    status = await process.wait()
                    watching.cancel_scope.cancel()
        finally:
            del self._running[number]
            await process.aclose()
        return process.pid, status, relay.last_error

    @staticmethod
    def _signal(process: Process, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.Signals(signum))

    async def _end_input_when_stopping(self, process: Process) -> None:
        """Close the worker's stdin once stopping: what the worker waits for if the signal
        came before it could handle one."""
        await self._stopping.wait()
        assert process.stdin is not None
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            await process.stdin.aclose()

    def _fail(self, message: str) -> None:
        if self._failure is None:
            self._failure = message
            logger.error("%s; stopping the other workers", message)
        self.stop(signal.SIGTERM)


def _failure(status: int, last_error: str | None) -> str:
    """Say how a worker ended, for one log line: ``was killed by SIGKILL`` or ``exited
    with status 1 (headwater: error: ...)``."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        how = f"was killed by {name}"
    else:
        how = f"exited with status {status}"
    return how if last_error is None else f"{how} ({last_error})"


class _Relay:
    """Copies a worker's stderr to ours, line by line, marked with its number."""

    def __init__(self, number: int, out: TextIO) -> None:
        self._prefix = f"headwater: worker {number}: "
        self._out = out
        self.last_error: str | None = None

    async def copy(self, stream: ByteReceiveStream) -> None:
        """Copy until the worker closes its stderr."""
        pending = b""
        with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError):
            while True:
                pending += await stream.receive()
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._write(line)
                while len(pending) > _MAX_LINE:
                    self._write(pending[:_MAX_LINE])
                    pending = pending[_MAX_LINE:]
        if pending:
            self._write(pending)

    def _write(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        if line.startswith("headwater: error: "):
            self.last_error = line.removeprefix("headwater: ")
        try:
            self._out.write(self._prefix + line.removeprefix("headwater: ") + "\n")
            self._out.flush()
        except OSError:
            pass  # our stderr is gone: the worker goes on regardless
