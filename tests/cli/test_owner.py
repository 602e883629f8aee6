"""cli/_owner.py and claiming a data directory: the owner's address instead of a wait.

The holder here is a store (and a broker) in the test's own process: ``flock`` locks
belong to open files, so the command's look at the lock sees it held as another
process's would be.
"""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import click
import pytest
from anyio.abc import TaskStatus

from headwater.broker import serve_data_directory
from headwater.cli._datadir import claim_waiting, watch
from headwater.cli._owner import Served, find_served, while_served
from headwater.groups import GroupCoordinator
from headwater.store import Store, open_store, write_served_address


async def serve_when_told(data: Path, go: anyio.Event, *, task_status: TaskStatus[None]) -> None:
    """Hold ``data`` (not served) until ``go`` is set, then serve it until cancelled."""
    async with open_store(data) as store, GroupCoordinator(store) as coordinator:
        task_status.started()
        await go.wait()
        async with serve_data_directory(store, coordinator):
            await anyio.sleep_forever()


async def test_a_waiting_command_takes_the_address_once_announced(tmp_path: Path) -> None:
    async with open_store(tmp_path):
        pass  # the directory exists
    go = anyio.Event()
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(serve_when_told, tmp_path, go)
            with watch(tmp_path) as watcher:
                async with anyio.create_task_group() as waiting:
                    claims: list[Store | Served] = []

                    async def claim() -> None:
                        async with claim_waiting(
                            tmp_path, watcher, writer=True, notice=False
                        ) as claimed:
                            claims.append(claimed)

                    waiting.start_soon(claim)
                    await anyio.wait_all_tasks_blocked()
                    assert claims == []  # held, not served: it waits
                    go.set()  # the holder starts serving, and keeps the directory
            (claimed,) = claims
            assert isinstance(claimed, Served)
            assert claimed.directory == tmp_path
            tg.cancel_scope.cancel()


async def test_an_address_that_does_not_answer_is_not_taken(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        async with open_store(tmp_path):
            write_served_address(tmp_path, f"127.0.0.1:{port}")
            assert await find_served(tmp_path) is None
            with watch(tmp_path) as watcher, pytest.raises(click.ClickException) as raised:
                async with claim_waiting(
                    tmp_path, watcher, writer=False, timeout_s=0.2, notice=False
                ):
                    pytest.fail("claimed a directory that is held")
            assert "is in use by" in raised.value.format_message()


async def test_work_through_an_owner_stops_when_it_goes(tmp_path: Path) -> None:
    stopped = anyio.Event()

    async def owner(*, task_status: TaskStatus[None]) -> None:
        async with (
            open_store(tmp_path) as store,
            GroupCoordinator(store) as coordinator,
            serve_data_directory(store, coordinator),
        ):
            task_status.started()
            await stopped.wait()

    with anyio.fail_after(60), watch(tmp_path) as watcher:
        async with anyio.create_task_group() as tg:
            await tg.start(owner)
            served = await find_served(tmp_path)
            assert served is not None

            async def forever() -> None:
                stopped.set()  # the owner stops while the work goes on
                await anyio.sleep_forever()

            assert await while_served(served, watcher, forever) is False

            async def fails() -> None:
                raise ValueError("not the owner's doing")

        # A failure while the owner still serves is the work's own.
        async with anyio.create_task_group() as tg:
            stopped = anyio.Event()
            await tg.start(owner)
            served = await find_served(tmp_path)
            assert served is not None
            with pytest.raises(ValueError, match="not the owner's doing"):
                await while_served(served, watcher, fails)

            async def done() -> None:
                pass

            assert await while_served(served, watcher, done) is True
            stopped.set()
