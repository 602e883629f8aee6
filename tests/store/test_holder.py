"""store/_holder.py: the record of who holds a data directory, and when it is believed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from headwater.store import DataDirectoryLockedError, Store, open_store, read_holder
from headwater.store._fs import OS_FILE_SYSTEM
from headwater.store._holder import HOLDER_FILE, LOCK_FILE, LockHolder, record_holder

HOLD = """
import sys

import anyio

from headwater.store import open_store


async def main(path):
    async with open_store(path, read_only=sys.argv[2] == "ro"):
        print("held", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the test closes stdin


anyio.run(main, sys.argv[1])
"""


def hold(data: Path, *, read_only: bool = False) -> subprocess.Popen[str]:
    """Start a process that holds ``data`` until its stdin is closed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(data), "ro" if read_only else "rw"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


async def test_the_holder_records_itself_and_clears_the_record(tmp_path: Path) -> None:
    async with open_store(tmp_path):
        holder = read_holder(tmp_path)
        assert holder == LockHolder(os.getpid(), tuple(sys.orig_argv))
        assert holder.describe().startswith(f"pid {os.getpid()} (")
    assert read_holder(tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE]


@pytest.mark.parametrize("read_only", [False, True], ids=["writer", "reader"])
async def test_a_refused_open_names_the_holder(tmp_path: Path, read_only: bool) -> None:
    async with open_store(tmp_path):
        pass  # the directory exists, as a reader needs
    proc = hold(tmp_path, read_only=read_only)
    try:
        with pytest.raises(DataDirectoryLockedError, match=f"in use by pid {proc.pid} \\("):
            async with open_store(tmp_path):
                pass
        holder = read_holder(tmp_path)
        assert holder is not None and holder.pid == proc.pid
        # Its command line, on one line.
        assert holder.describe().startswith(f"pid {proc.pid} ({sys.executable} -c ' import sys")
        assert "\n" not in holder.describe()
    finally:
        release(proc)
    assert read_holder(tmp_path) is None


async def test_a_killed_holders_record_is_not_believed(tmp_path: Path) -> None:
    proc = hold(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (tmp_path / HOLDER_FILE).exists()  # left behind by the crash
    assert read_holder(tmp_path) is None
    async with open_store(tmp_path):  # the next holder replaces it
        holder = read_holder(tmp_path)
        assert holder is not None and holder.pid == os.getpid()


async def test_a_copy_of_a_held_directory_does_not_name_the_original_holder(
    tmp_path: Path,
) -> None:
    original, copy = tmp_path / "original", tmp_path / "copy"
    proc = hold(original)
    try:
        shutil.copytree(original, copy)  # a backup taken while it ran
        assert read_holder(original) is not None
        assert read_holder(copy) is None  # another lock file: its record is not about it
        async with open_store(copy, read_only=True):
            holder = read_holder(copy)
            assert holder is not None and holder.pid == os.getpid()
    finally:
        release(proc)


async def test_the_store_works_where_the_record_cannot_be_written(tmp_path: Path) -> None:
    # The file system refuses the record's file (here: a folder sits at its temporary name).
    (tmp_path / (HOLDER_FILE + ".tmp")).mkdir()
    async with open_store(tmp_path) as store:
        await store.create_topic("t")
        assert not (tmp_path / HOLDER_FILE).exists()
        # The kernel's lock table still names the holder.
        holder = read_holder(tmp_path)
        assert holder is not None and holder.pid == os.getpid()
        with pytest.raises(DataDirectoryLockedError, match=f"in use by pid {os.getpid()} "):
            async with Store(tmp_path, read_only=True):
                pass


async def test_a_reader_writes_no_record_and_is_named_all_the_same(tmp_path: Path) -> None:
    async with open_store(tmp_path):
        pass
    before = sorted(p.name for p in tmp_path.iterdir())
    mtime = tmp_path.stat().st_mtime_ns
    proc = hold(tmp_path, read_only=True)
    try:
        assert sorted(p.name for p in tmp_path.iterdir()) == before
        assert tmp_path.stat().st_mtime_ns == mtime
        holder = read_holder(tmp_path)
        assert holder is not None and holder.pid == proc.pid
        assert holder.argv[-1] == "ro"  # its command line, from /proc/<pid>/cmdline
    finally:
        release(proc)
    assert read_holder(tmp_path) is None


async def test_without_a_lock_table_the_record_names_the_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from headwater.store import _holder

    monkeypatch.setattr(_holder, "PROC_LOCKS", tmp_path / "no-such-table")
    async with open_store(tmp_path / "data") as store:
        holder = read_holder(store.path)
        assert holder == LockHolder(os.getpid(), tuple(sys.orig_argv))


def test_recording_on_a_read_only_file_system_is_skipped(tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    mount.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "tmpfs", str(mount)], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a file system here: {exc}")
    try:
        (mount / LOCK_FILE).touch()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        fd = os.open(mount / LOCK_FILE, os.O_RDONLY)
        try:
            assert record_holder(OS_FILE_SYSTEM, mount, fd) is False
        finally:
            os.close(fd)
        assert read_holder(mount) is None
    finally:
        subprocess.run(["umount", str(mount)], check=True)
