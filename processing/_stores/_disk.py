"""The on-disk store: an LMDB table per store and task, with a write-back cache.

Why LMDB. Measured on this project's machine (1,000,000 keys of the shape an
aggregation writes, py-lmdb 3.0 and rocksdict 0.3.29, both through their Python
bindings): writing them in 10 batches took 0.69 s with LMDB against 2.11 s with
rocksdict's WriteBatch; 100,000 random reads 0.40 s against 1.14 s (rocksdict's
multi-get); a full scan 0.54 s against 0.77 s; reopening 0.5 ms against 76 ms. RocksDB
keeps the files smaller (15 MB against 51 MB: it compresses), which matters less here
than a restore from the local copy that costs nothing (reopening it is the whole
restore), and LMDB's single-writer, copy-on-write B-tree, whose commits are atomic,
makes the local copy's consistency simple: a commit writes a flush's changes and the
changelog offset they reach, together.

Theory of operation. ``data`` is a cache of decoded values: steps prefetch the keys a
batch needs (:meth:`DiskStore.load`, one read per missing key) and then work on the
dict as with a memory store. A flush keeps the encoded changes; once the changelog
holds them (``checkpointed``), one LMDB write transaction stores them with the
changelog offset and the checkpoint, and the cache is emptied if it grew past its
bound. The local copy never holds what the changelog does not: after a crash it is at
some earlier flush, and a restore reads the changelog from that flush's offset on
(re-applying what it holds is harmless: each record is a key's latest value).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lmdb

from .._errors import ProcessingError
from . import (
    CHECKPOINT_KEY,
    MemoryStore,
    StoreKind,
    StoreSpec,
    decode_checkpoint,
    without_checkpoints,
)

_MISSING: Any = object()
_OFFSET = b"changelog_offset"
_CHECKPOINT = b"checkpoint"
#: Decoded values kept in memory between flushes, at most (the cache is emptied past it).
CACHE_LIMIT = 200_000
#: The largest a store's file may grow (LMDB maps it; the file grows only as used).
MAP_SIZE = 1 << 40


class DiskStore(MemoryStore):
    """A store kept in an LMDB environment at ``path`` (see the module docstring).

    :raises ProcessingError: if the environment cannot be opened.
    """

    kind = StoreKind.DISK

    def __init__(self, spec: StoreSpec, path: Path) -> None:
        super().__init__(spec)
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
            self.env = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=2, readahead=False)
            self.db = self.env.open_db(b"data")
            self.meta = self.env.open_db(b"meta")
        except (OSError, lmdb.Error) as exc:
            raise ProcessingError(f"cannot open the state store at {path}: {exc}") from exc
        self._pending: list[tuple[bytes, bytes | None]] = []
        with self.env.begin(db=self.meta) as txn:
            offset = txn.get(_OFFSET)
            checkpoint = txn.get(_CHECKPOINT)
        self.changelog_offset = None if offset is None else int(offset)
        if checkpoint is not None:
            self.take_checkpoint(decode_checkpoint(bytes(checkpoint)))

    def __len__(self) -> int:
        with self.env.begin(db=self.db) as txn:
            stored = int(txn.stat(self.db)["entries"])
        return stored + len(self.created & self.data.keys())

    # -- reads through the cache ------------------------------------------------------

    def get(self, key: Any, default: Any = None) -> Any:
        """Return the value of ``key`` (from the cache, else the disk), or ``default``."""
        value = self.data.get(key, _MISSING)
        if value is not _MISSING:
            return value
        if key in self.dirty:  # removed since the last flush
            return default
        self.load((key,))
        return self.data.get(key, default)

    def put(self, key: Any, value: Any) -> None:
        """Set ``key`` to ``value``."""
        if key not in self.dirty and key not in self.data:
            self.load((key,))
            if key not in self.data:
                self.created.add(key)
        self.data[key] = value
        self.dirty.add(key)

    def delete(self, key: Any) -> None:
        """Remove ``key`` (nothing if absent)."""
        if key not in self.data and key not in self.dirty:
            self.load((key,))
        super().delete(key)

    def load(self, keys: Iterable[Any]) -> None:
        """Read the ``keys`` that are neither cached nor changed since the last flush."""
        data, dirty = self.data, self.dirty
        missing = [k for k in keys if k not in data and k not in dirty]
        if not missing:
            return
        encode, decode = self.spec.keys.encode, self.spec.decode_value
        with self.env.begin(db=self.db, buffers=False) as txn:
            get = txn.get
            for key in missing:
                raw = get(encode(key))
                if raw is not None:
                    data[key] = decode(raw)

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Return every key and value: the disk's, overlaid with the cache's changes."""
        found = dict(self._stored())
        for key in self.dirty:
            value = self.data.get(key, _MISSING)
            if value is _MISSING:
                found.pop(key, None)
            else:
                found[key] = value
        return iter(list(found.items()))

    def all_keys(self) -> list[Any]:
        """Return every key."""
        return [key for key, _ in self.items()]

    def _stored(self) -> Iterator[tuple[Any, Any]]:
        decode_key, decode = self.spec.keys.decode, self.spec.decode_value
        with self.env.begin(db=self.db, buffers=False) as txn:
            for raw_key, raw in txn.cursor():
                key = decode_key(raw_key)
                cached = self.data.get(key, _MISSING)
                yield key, decode(raw) if cached is _MISSING else cached

    # -- the changelog and the local copy -------------------------------------------------

    def flushed(self, keys: list[bytes | None], values: list[bytes | None]) -> None:
        """Keep the flushed changes until the changelog holds them."""
        self._pending.extend(zip(keys, values, strict=True))  # type: ignore[arg-type]

    def checkpointed(self, changelog_offset: int) -> None:
        """Store the kept changes, the offset and the checkpoint in one transaction."""
        pending, self._pending = self._pending, []
        with self.env.begin(write=True) as txn:
            for key, value in pending:
                if key == CHECKPOINT_KEY:
                    assert value is not None
                    txn.put(_CHECKPOINT, value, db=self.meta)
                elif value is None:
                    txn.delete(key, db=self.db)
                else:
                    txn.put(key, value, db=self.db)
            txn.put(_OFFSET, str(changelog_offset).encode(), db=self.meta)
        self.changelog_offset = changelog_offset
        if len(self.data) > CACHE_LIMIT and not self.dirty:
            self.data.clear()

    def apply_changelog(self, keys: list[bytes | None], values: list[bytes | None]) -> None:
        """Copy changelog records into the table as they are (keys and values are the
        table's own bytes)."""
        self.restored += len(keys)
        keys, values, checkpoint = without_checkpoints(keys, values)
        with self.env.begin(write=True, db=self.db) as txn:
            items: Any = zip(keys, values, strict=True)
            if None in values or None in keys:  # tombstones: each key's latest decides
                latest = dict(items)
                latest.pop(None, None)
                for key in [k for k, v in latest.items() if v is None]:
                    del latest[key]
                    txn.delete(key)
                items = latest.items()
            # In order, in one C call: a key's last value wins.
            txn.cursor().putmulti(items, dupdata=False)
            if checkpoint is not None:
                txn.put(_CHECKPOINT, checkpoint, db=self.meta)
        if checkpoint is not None:
            self.take_checkpoint(decode_checkpoint(checkpoint))
        self.data.clear()

    def local_offset(self) -> int | None:
        """Return the changelog offset the local copy reflects."""
        return self.changelog_offset

    def close(self) -> None:
        """Close the LMDB environment (the local copy stays for the next open)."""
        self.env.close()

    def wipe(self) -> None:
        """Empty the local copy (before a full restore)."""
        super().wipe()
        self._pending = []
        with self.env.begin(write=True) as txn:
            txn.drop(self.db, delete=False)
            txn.drop(self.meta, delete=False)

    def destroy(self) -> None:
        """Close and remove the local copy."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
