"""cli/_watch.py: looking at a data directory's lock without waking anyone."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from headwater.cli._datadir import LOCK_FILE
from headwater.cli._watch import LockWatcher


def hold(path: Path) -> int:
    """Take the lock as another process would (another open file); return its descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_held_elsewhere_sees_the_lock_and_leaves_it_free(tmp_path: Path) -> None:
    lock = tmp_path / LOCK_FILE
    with LockWatcher(tmp_path, LOCK_FILE) as watcher:
        assert not watcher.held_elsewhere()  # no lock file: nobody has the directory
        fd = hold(lock)
        assert watcher.held_elsewhere()
        os.close(fd)
        assert not watcher.held_elsewhere()
        # Looking took nothing: another process can take the lock at once.
        os.close(hold(lock))


def test_held_elsewhere_follows_a_lock_file_made_anew(tmp_path: Path) -> None:
    lock = tmp_path / LOCK_FILE
    lock.touch()
    with LockWatcher(tmp_path, LOCK_FILE) as watcher:
        assert not watcher.held_elsewhere()  # it keeps a descriptor on this file
        lock.unlink()  # the directory is cleared and used again
        fd = hold(lock)
        try:
            assert watcher.held_elsewhere()
        finally:
            os.close(fd)


async def test_an_announcement_wakes_the_watcher(tmp_path: Path) -> None:
    with LockWatcher(tmp_path, LOCK_FILE, ".address") as watcher:
        (tmp_path / "other").write_text("x")
        os.replace(tmp_path / "other", tmp_path / "elsewhere")  # not the announced name
        assert watcher._read_events() == (False, False)  # nothing to look at
        (tmp_path / ".address.tmp").write_text("{}")
        os.replace(tmp_path / ".address.tmp", tmp_path / ".address")
        assert await watcher.wait() is True
