"""store/_address.py: where a data directory's owner serves it, and when that is believed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from headwater.store import (
    ADDRESS_FILE,
    ServedAddress,
    clear_served_address,
    open_store,
    served_address,
    write_served_address,
)

ANNOUNCE = """
import sys

import anyio

from headwater.store import open_store, write_served_address


async def main(path):
    async with open_store(path):
        write_served_address(path, "127.0.0.1:4242")
        print("announced", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)  # until killed


anyio.run(main, sys.argv[1])
"""


async def test_the_owner_announces_and_withdraws(tmp_path: Path) -> None:
    assert served_address(tmp_path) is None  # no data directory yet
    async with open_store(tmp_path):
        assert served_address(tmp_path) is None  # held, not served
        write_served_address(tmp_path, "127.0.0.1:4242")
        assert served_address(tmp_path) == ServedAddress(os.getpid(), "127.0.0.1:4242")
        clear_served_address(tmp_path)
        assert served_address(tmp_path) is None
        assert not (tmp_path / ADDRESS_FILE).exists()
        write_served_address(tmp_path, "[::1]:9092")
        assert served_address(tmp_path) == ServedAddress(os.getpid(), "[::1]:9092")
    # The owner let go without withdrawing (as a crash does): nobody holds the lock now.
    assert (tmp_path / ADDRESS_FILE).exists()
    assert served_address(tmp_path) is None


def test_an_owner_killed_leaves_a_stale_address_that_is_ignored(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", ANNOUNCE, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline() == "announced\n"
        assert served_address(tmp_path) == ServedAddress(owner.pid, "127.0.0.1:4242")
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    record = orjson.loads((tmp_path / ADDRESS_FILE).read_bytes())
    assert record["pid"] == owner.pid  # still there, and still says so
    assert served_address(tmp_path) is None


async def test_an_address_of_another_process_is_not_believed(tmp_path: Path) -> None:
    async with open_store(tmp_path):
        write_served_address(tmp_path, "127.0.0.1:4242")
        record = orjson.loads((tmp_path / ADDRESS_FILE).read_bytes())
        # This process holds the lock; the file claims another one does.
        (tmp_path / ADDRESS_FILE).write_bytes(orjson.dumps({**record, "pid": os.getppid()}))
        assert served_address(tmp_path) is None


async def test_a_copied_directory_does_not_carry_the_address(tmp_path: Path) -> None:
    original, copy = tmp_path / "original", tmp_path / "copy"
    async with open_store(original):
        write_served_address(original, "127.0.0.1:4242")
        shutil.copytree(original, copy)
        # The copy's lock file is another file, though this very process holds one.
        async with open_store(copy):
            assert served_address(copy) is None
        assert served_address(original) is not None


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"pid": "1", "lock": [0, 0], "bootstrap": "127.0.0.1:1"}',
        b'{"pid": PID, "lock": LOCK, "bootstrap": 9092}',
        b'{"pid": PID, "lock": LOCK, "bootstrap": "127.0.0.1"}',
        b'{"pid": PID, "lock": LOCK, "bootstrap": "127.0.0.1:0"}',
        b'{"pid": PID, "lock": LOCK, "bootstrap": "127.0.0.1:70000"}',
        b'{"pid": PID, "lock": LOCK, "bootstrap": ":9092"}',
        b'{"pid": PID, "lock": [0, 0], "bootstrap": "127.0.0.1:9092"}',
    ],
)
async def test_a_damaged_address_file_is_ignored(tmp_path: Path, content: bytes) -> None:
    async with open_store(tmp_path):
        lock = os.stat(tmp_path / ".lock")
        content = content.replace(b"PID", str(os.getpid()).encode())
        content = content.replace(b"LOCK", f"[{lock.st_dev}, {lock.st_ino}]".encode())
        (tmp_path / ADDRESS_FILE).write_bytes(content)
        assert served_address(tmp_path) is None


async def test_a_reading_store_ignores_the_address_file(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("t")
        write_served_address(tmp_path, "127.0.0.1:4242")
    # Not a topic, and nothing a reader changes.
    async with open_store(tmp_path, read_only=True) as store:
        assert store.list_topics() == ["t"]
    assert (tmp_path / ADDRESS_FILE).exists()
