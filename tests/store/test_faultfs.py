"""The power-loss simulator (``faultfs.py``) against a model of what a power cut may leave.

The model is deliberately simpler than the simulator: it keeps, per file, every content
the file had since its last fsync (a list of snapshots), and per directory every set of
entries it had since its last fsync. After ``power_loss`` each directory must hold one of
its entry snapshots (a prefix of its unsynced changes), each file one of its content
snapshots or a write torn between two of them, and everything fsynced must be there
exactly. Separate tests show that each kind of loss does happen for some seed, so a
simulator that kept everything could not pass.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faultfs import Fault, FaultFS, PowerLoss
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

NAMES = ("a", "b", "c")
WRITE = os.O_WRONLY | os.O_CREAT | os.O_APPEND


@dataclass(eq=False)
class ModelFile:
    #: Contents since the last fsync; [0] is the durable one.
    snapshots: list[bytes] = field(default_factory=lambda: [b""])
    #: The change leading to each later snapshot: (offset, data) or (length, None).
    changes: list[tuple[int, bytes | None]] = field(default_factory=list)

    @property
    def content(self) -> bytes:
        return self.snapshots[-1]

    def change(self, offset: int, data: bytes | None) -> None:
        old = bytearray(self.content)
        if data is None:
            old = old[:offset] + bytearray(max(0, offset - len(old)))
        else:
            old.extend(bytes(max(0, offset - len(old))))
            old[offset : offset + len(data)] = data
        self.changes.append((offset, data))
        self.snapshots.append(bytes(old))

    def sync(self) -> None:
        self.snapshots = [self.content]
        self.changes = []

    def allowed(self, found: bytes) -> bool:
        """Whether ``found`` is a snapshot, or a write torn between two snapshots."""
        if found in self.snapshots:
            return True
        for before, (offset, data) in zip(self.snapshots, self.changes, strict=False):
            if data is None:
                continue
            for torn in range(1, len(data)):
                partial = bytearray(before)
                partial.extend(bytes(max(0, offset - len(partial))))
                partial[offset : offset + torn] = data[:torn]
                if bytes(partial) == found:
                    return True
        return False


@dataclass(eq=False)
class ModelDir:
    #: Entry maps since the last fsync; [0] is the durable one.
    snapshots: list[dict[str, ModelFile]] = field(default_factory=lambda: [{}])

    @property
    def current(self) -> dict[str, ModelFile]:
        return self.snapshots[-1]

    def change(self, entries: dict[str, ModelFile]) -> None:
        self.snapshots.append(entries)

    def sync(self) -> None:
        self.snapshots = [self.current]


class PowerLossMachine(RuleBasedStateMachine):
    """Random file work through FaultFS, then a power cut, checked against the model."""

    def __init__(self) -> None:
        super().__init__()
        self.root: Path
        self.fs: FaultFS
        self.dir = ModelDir()

    @initialize(seed=st.integers(0, 2**32 - 1))
    def start(self, seed: int) -> None:
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="faultfs-model-"))
        self.fs = FaultFS(self.root, seed=seed)

    def teardown(self) -> None:
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)

    def path(self, name: str) -> Path:
        return self.root / name

    @rule(name=st.sampled_from(NAMES), data=st.binary(min_size=1, max_size=12))
    def append(self, name: str, data: bytes) -> None:
        fd = self.fs.open(self.path(name), WRITE, 0o644)
        try:
            assert self.fs.write(fd, data) == len(data)
        finally:
            self.fs.close(fd)
        file = self.dir.current.get(name)
        if file is None:
            file = ModelFile()
            self.dir.change({**self.dir.current, name: file})
        file.change(len(file.content), data)

    @rule(name=st.sampled_from(NAMES), data=st.binary(max_size=8))
    def overwrite(self, name: str, data: bytes) -> None:
        """O_TRUNC then write from the start, as an atomic write's temporary file is made."""
        fd = self.fs.open(self.path(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if data:
                assert self.fs.write(fd, data) == len(data)
        finally:
            self.fs.close(fd)
        file = self.dir.current.get(name)
        if file is None:
            file = ModelFile()
            self.dir.change({**self.dir.current, name: file})
        else:
            file.change(0, None)
        if data:
            file.change(0, data)

    @precondition(lambda self: self.dir.current)
    @rule(data=st.data(), at=st.integers(0, 24), payload=st.binary(min_size=1, max_size=8))
    def pwrite(self, data: st.DataObject, at: int, payload: bytes) -> None:
        """Overwrite in place (or past the end, leaving a hole), as a checkpoint slot is."""
        name = data.draw(st.sampled_from(sorted(self.dir.current)))
        fd = self.fs.open(self.path(name), os.O_WRONLY, 0o644)
        try:
            assert self.fs.pwrite(fd, payload, at) == len(payload)
        finally:
            self.fs.close(fd)
        self.dir.current[name].change(at, payload)

    @precondition(lambda self: self.dir.current)
    @rule(data=st.data(), length=st.integers(0, 20))
    def truncate(self, data: st.DataObject, length: int) -> None:
        name = data.draw(st.sampled_from(sorted(self.dir.current)))
        fd = self.fs.open(self.path(name), os.O_WRONLY, 0o644)
        try:
            self.fs.ftruncate(fd, length)
        finally:
            self.fs.close(fd)
        self.dir.current[name].change(length, None)

    @precondition(lambda self: self.dir.current)
    @rule(data=st.data())
    def fsync_file(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.dir.current)))
        fd = self.fs.open(self.path(name), os.O_RDONLY)
        try:
            self.fs.fsync(fd)
        finally:
            self.fs.close(fd)
        self.dir.current[name].sync()

    @rule()
    def fsync_dir(self) -> None:
        fd = self.fs.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.fs.fsync(fd)
        finally:
            self.fs.close(fd)
        self.dir.sync()

    @precondition(lambda self: self.dir.current)
    @rule(data=st.data(), dst=st.sampled_from(NAMES))
    def replace(self, data: st.DataObject, dst: str) -> None:
        src = data.draw(st.sampled_from(sorted(self.dir.current)))
        self.fs.replace(self.path(src), self.path(dst))
        entries = dict(self.dir.current)
        entries[dst] = entries.pop(src)
        self.dir.change(entries)

    @precondition(lambda self: self.dir.current)
    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.dir.current)))
        self.fs.unlink(self.path(name))
        entries = dict(self.dir.current)
        del entries[name]
        self.dir.change(entries)

    @invariant()
    def real_files_hold_the_current_state(self) -> None:
        if not hasattr(self, "fs") or self.fs.powered_off:
            return
        assert sorted(os.listdir(self.root)) == sorted(self.dir.current)
        for name, file in self.dir.current.items():
            assert self.path(name).read_bytes() == file.content

    @rule()
    def power_loss_and_check(self) -> None:
        self.fs.power_loss()
        names = sorted(os.listdir(self.root))
        matching = [s for s in self.dir.snapshots if sorted(s) == names]
        assert matching, f"entries {names} match no snapshot {self.dir.snapshots}"
        problems = []
        for snapshot in matching:
            wrong = [
                name
                for name, file in snapshot.items()
                if not file.allowed(self.path(name).read_bytes())
            ]
            if not wrong:
                break
            problems.append(wrong)
        else:
            raise AssertionError(f"contents no power cut could leave: {problems}")
        # Start a new life on what survived: all of it is durable now.
        self.fs = FaultFS(self.root, seed=self.fs.rng.getrandbits(32))
        survived = {name: ModelFile([self.path(name).read_bytes()]) for name in names}
        self.dir = ModelDir([survived])


TestPowerLossModel = PowerLossMachine.TestCase
TestPowerLossModel.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- each kind of loss happens --------------------------------------------------------------


def _write(fs: FaultFS, path: Path, data: bytes, *, sync: bool) -> None:
    fd = fs.open(path, WRITE, 0o644)
    try:
        fs.write(fd, data)
        if sync:
            fs.fsync(fd)
    finally:
        fs.close(fd)


def _sync_dir(fs: FaultFS, path: Path) -> None:
    fd = fs.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fs.fsync(fd)
    finally:
        fs.close(fd)


def _outcomes(tmp_path: Path, scenario: object, seeds: int = 40) -> set[object]:
    seen = set()
    for seed in range(seeds):
        root = tmp_path / f"seed-{seed}"
        root.mkdir()
        fs = FaultFS(root, seed=seed)
        scenario(fs, root)  # type: ignore[operator]
        fs.power_loss()
        seen.add(tuple(sorted((p.name, p.read_bytes()) for p in root.iterdir())))
    return seen


def test_fsynced_data_and_entries_always_survive(tmp_path: Path) -> None:
    def scenario(fs: FaultFS, root: Path) -> None:
        _write(fs, root / "a", b"hello", sync=True)
        _sync_dir(fs, root)
        _write(fs, root / "a", b" world", sync=False)

    outcomes = _outcomes(tmp_path, scenario)
    assert all(dict(o)["a"].startswith(b"hello") for o in outcomes), outcomes
    # Unsynced bytes are sometimes lost, sometimes kept, sometimes torn.
    contents = {dict(o)["a"] for o in outcomes}
    assert b"hello" in contents and b"hello world" in contents, contents
    assert any(b"hello" < c < b"hello world" for c in contents), contents


def test_a_new_file_whose_directory_was_not_fsynced_may_vanish(tmp_path: Path) -> None:
    def scenario(fs: FaultFS, root: Path) -> None:
        _write(fs, root / "new", b"data", sync=True)  # the file, not its name

    outcomes = _outcomes(tmp_path, scenario)
    assert outcomes == {(), (("new", b"data"),)}


def test_an_unsynced_rename_may_be_undone_and_an_unsynced_unlink_may_not_happen(
    tmp_path: Path,
) -> None:
    def scenario(fs: FaultFS, root: Path) -> None:
        _write(fs, root / "old", b"1", sync=True)
        _write(fs, root / "tmp", b"2", sync=True)
        _sync_dir(fs, root)
        fs.replace(root / "tmp", root / "old")
        fs.unlink(root / "old")

    outcomes = _outcomes(tmp_path, scenario)
    # A prefix of (rename, unlink): none, the rename only, or both.
    assert outcomes == {(("old", b"1"), ("tmp", b"2")), (("old", b"2"),), ()}


def test_a_new_directory_needs_its_parent_fsynced(tmp_path: Path) -> None:
    def scenario(fs: FaultFS, root: Path) -> None:
        fs.mkdir(root / "d")
        _write(fs, root / "d" / "f", b"x", sync=True)
        _sync_dir(fs, root / "d")

    seen = set()
    for seed in range(30):
        root = tmp_path / f"s{seed}"
        root.mkdir()
        fs = FaultFS(root, seed=seed)
        scenario(fs, root)
        fs.power_loss()
        seen.add((root / "d" / "f").exists() if (root / "d").exists() else None)
    assert seen == {None, True}


def test_power_lost_at_an_operation_stops_everything_after_it(tmp_path: Path) -> None:
    fs = FaultFS(tmp_path, seed=1)
    fs.crash_after(2)  # create, write, then the fsync is where power goes
    fd = fs.open(tmp_path / "f", WRITE, 0o644)
    fs.write(fd, b"abc")
    with pytest.raises(PowerLoss):
        fs.fsync(fd)
    with pytest.raises(PowerLoss):
        fs.write(fd, b"more")
    fs.close(fd)  # closing after the cut is harmless
    fs.power_loss()
    survivor = tmp_path / "f"
    assert not survivor.exists() or survivor.read_bytes() in (b"", b"a", b"ab", b"abc")


def test_a_failed_fsync_loses_its_writes_for_good(tmp_path: Path) -> None:
    # fsyncgate: after EIO the kernel forgets the dirty pages; a later fsync "succeeds".
    for seed in range(10):
        fs = FaultFS(tmp_path, seed=seed)
        path = tmp_path / f"f{seed}"
        _write(fs, path, b"kept", sync=True)
        _sync_dir(fs, tmp_path)
        fault = fs.inject(Fault("fsync", errno.EIO, path_suffix=path.name))
        fd = fs.open(path, WRITE, 0o644)
        fs.write(fd, b"LOST")
        with pytest.raises(OSError) as failed:
            fs.fsync(fd)
        assert failed.value.errno == errno.EIO and fault.hits == 1
        assert path.read_bytes() == b"keptLOST"  # still in the page cache
        fs.write(fd, b"late")
        fs.fsync(fd)  # succeeds, but cannot bring the dropped pages back
        fs.close(fd)
        fs.power_loss()
        assert path.read_bytes() == b"kept\0\0\0\0late"


def test_a_partial_write_then_enospc(tmp_path: Path) -> None:
    fs = FaultFS(tmp_path)
    fault = fs.inject(Fault("write", errno.ENOSPC, path_suffix=".log", partial=True))
    fd = fs.open(tmp_path / "x.log", WRITE, 0o644)
    assert fs.write(fd, b"12345678") == 4
    with pytest.raises(OSError) as full:
        fs.write(fd, b"5678")
    assert full.value.errno == errno.ENOSPC and fault.hits == 1
    assert fs.write(fd, b"5678") == 4  # the rule failed its one write
    fs.close(fd)
    assert (tmp_path / "x.log").read_bytes() == b"12345678"
