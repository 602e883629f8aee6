"""How ``headwater run`` takes its stop requests: a signal, and (under a supervisor) the end
of standard input. Real signals sent to this process; waits are on the log records the
watcher writes."""

from __future__ import annotations

import logging
import os
import signal

import anyio

from headwater.cli._app_run import _watch_signals


class _Lines(logging.Handler):
    """Collects the watcher's messages and wakes a waiter at each one."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []
        self.arrived = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.arrived.set()
        self.arrived = anyio.Event()

    async def wait_for(self, count: int) -> None:
        with anyio.fail_after(60):  # a hang guard, not a timing
            while len(self.messages) < count:
                await self.arrived.wait()


async def _stop_requests(*, input_ended: bool) -> tuple[list[str], bool, bool]:
    """Send SIGTERM twice, handling each before the next; return the messages, whether the
    first left the run going, and whether the second stopped it at once."""
    logger = logging.getLogger("headwater")
    lines = _Lines()
    logger.addHandler(lines)
    level = logger.level
    logger.setLevel(logging.INFO)
    stop = anyio.Event()
    if input_ended:
        stop.set()  # what the end of standard input does, before the supervisor's signal
    going_after_first = False
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(_watch_signals, "app", stop, tg.cancel_scope)
            os.kill(os.getpid(), signal.SIGTERM)
            await lines.wait_for(1)
            going_after_first = not tg.cancel_scope.cancel_called
            if going_after_first:  # else the watcher is gone, and a signal would end pytest
                os.kill(os.getpid(), signal.SIGTERM)
                await lines.wait_for(2)
        stopped_at_once = tg.cancel_scope.cancel_called
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    return lines.messages, going_after_first, stopped_at_once


async def test_a_first_signal_stops_gracefully_and_a_second_at_once() -> None:
    messages, going, stopped = await _stop_requests(input_ended=False)
    assert going and stopped, messages
    assert "SIGTERM: finishing the batches in hand" in messages[0], messages
    assert "second signal" in messages[1], messages


async def test_the_end_of_input_and_the_supervisors_signal_are_one_graceful_stop() -> None:
    # A supervisor stopping its workers closes their input and signals them together: the
    # signal after the end of input must not count as a second one (which would drop the
    # batches in hand, uncommitted).
    messages, going, stopped = await _stop_requests(input_ended=True)
    assert going and stopped, messages
    assert "SIGTERM: already finishing the batches in hand" in messages[0], messages
    assert "second signal" in messages[1], messages
