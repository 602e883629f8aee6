"""Running a command's async body: on trio, and stoppable by SIGINT or SIGTERM."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from anyio.abc import TaskStatus

T = TypeVar("T")


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` to completion on the trio backend and return its result."""
    return anyio.run(fn, backend="trio")


def run_until_signal(fn: Callable[[], Awaitable[None]]) -> int | None:
    """Run ``fn`` until it returns or SIGINT/SIGTERM arrives; return that signal's number.

    A signal cancels ``fn``: a body that must finish a step first (an append in flight)
    shields it. Everything is closed cleanly before this returns.
    """
    received: list[int] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def watch(*, task_status: TaskStatus[None]) -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    task_status.started()
                    async for signum in signals:
                        received.append(signum)
                        tg.cancel_scope.cancel()
                        return

            await tg.start(watch)
            await fn()
            tg.cancel_scope.cancel()

    run_async(main)
    return received[0] if received else None
