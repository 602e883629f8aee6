"""State stores: per-task key-value state, its changelog, and what it covers.

Theory of operation
-------------------
Each stateful step owns one store per task (``StoreSpec`` says which: a name that is
the app's stable name for it, the kind, the changelog topic ``<app>-<name>-changelog``
and how its keys and values become bytes). A store is a dict in memory
(:class:`MemoryStore`) or a write-back cache over an on-disk table
(``_disk.py``); a step reads and writes the dict (``store.data``) a batch at a
time and then tells the store which keys it touched (:meth:`MemoryStore.touched`), so
no record costs a call into the store.

Changelog. The store remembers the keys changed since its last flush; a flush
(:meth:`MemoryStore.flush`) turns them into one record per changed key, its latest
value or a tombstone (a key created and deleted again between two flushes writes
nothing), followed by one *checkpoint record* (key :data:`CHECKPOINT_KEY`) that says
which input each store's state covers: the task's input positions at the flush, and
the step's stream time. The runtime flushes a task's stores under the task's lock (so
the state and the positions agree), writes the changelog records, waits for them to be
durable, and only then commits the input positions; so the committed position is never
ahead of what the changelog covers.

Consistency beyond at-least-once. After a crash, a task resumes at its last committed
positions, which may be behind what its restored state covers (the changelog was
written, the commit was not). Steps skip, for their state, input records below the
covered position (:meth:`MemoryStore.covered_from`), so no input is applied twice; their
outputs may repeat (at-least-once outputs, duplicates only from the uncommitted tail).

Restore (``_changelog.py``). A task processes nothing until its stores are restored:
read the changelog partition of the task from where the local copy ends (or from its
start) to its end, latest value per key, tombstones removing keys; the checkpoint
record restores what the state covers.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import repeat
from operator import is_
from typing import Any, NamedTuple

import orjson

from headwater.groups import TopicPartition
from headwater.store import exact_dumps, exact_loads, exact_loads_each

from .._json_columns import dumps_each

#: The changelog key of the checkpoint record (JSON keys never start with a NUL byte).
CHECKPOINT_KEY = b"\x00headwater.checkpoint"
#: The checkpoint record's format version.
CHECKPOINT_VERSION = 1

_MISSING: Any = object()


class StoreKind(enum.StrEnum):
    """Where a store keeps its state between flushes."""

    MEMORY = "memory"  #: a dict; restored from the changelog
    DISK = "disk"  #: an on-disk table with a local copy; restored from it plus the tail


def _identity(value: Any) -> Any:
    return value


def encode_json_key(key: object) -> bytes:
    """Encode a store key as canonical JSON (tuples as arrays)."""
    return exact_dumps(key, orjson.OPT_SORT_KEYS)


def decode_json_key(data: bytes) -> Any:
    """Decode a JSON store key; arrays come back as tuples, so that they hash."""
    return _tuples(exact_loads(data))


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(map(_tuples, value))
    return value


def encode_window_key(key: tuple[bytes, int]) -> bytes:
    """Encode ``(key bytes, window start)``: the start first, 8 bytes big-endian, so that
    an ordered table lists windows by start."""
    return key[1].to_bytes(8, "big", signed=True) + key[0]


def decode_window_key(data: bytes) -> tuple[bytes, int]:
    """Decode :func:`encode_window_key`."""
    return data[8:], int.from_bytes(data[:8], "big", signed=True)


def encode_session_key(key: tuple[bytes, int, int]) -> bytes:
    """Encode ``(key bytes, start, end)`` of a session."""
    return key[1].to_bytes(8, "big", signed=True) + key[2].to_bytes(8, "big", signed=True) + key[0]


def decode_session_key(data: bytes) -> tuple[bytes, int, int]:
    """Decode :func:`encode_session_key`."""
    return (
        data[16:],
        int.from_bytes(data[:8], "big", signed=True),
        int.from_bytes(data[8:16], "big", signed=True),
    )


@dataclass(frozen=True, slots=True)
class KeyCodec:
    """How a store's keys become changelog keys and back."""

    name: str
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]


BYTES_KEYS = KeyCodec("bytes", _identity, _identity)
JSON_KEYS = KeyCodec("json", encode_json_key, decode_json_key)
WINDOW_KEYS = KeyCodec("window", encode_window_key, decode_window_key)
SESSION_KEYS = KeyCodec("session", encode_session_key, decode_session_key)


def _encode_json_value(value: Any) -> bytes:
    return exact_dumps(value)


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """One stateful step's store: its stable name, kind, changelog topic and codecs.

    Values are JSON by default (``encode_value``/``decode_value``): a step's state must
    be made of what JSON holds.
    """

    name: str
    changelog: str
    kind: StoreKind = StoreKind.MEMORY
    keys: KeyCodec = JSON_KEYS
    encode_value: Callable[[Any], bytes | None] = field(default=_encode_json_value)
    decode_value: Callable[[bytes], Any] = field(default=exact_loads)


class Checkpoint(NamedTuple):
    """What a checkpoint record says: the input positions the state covers, the step's
    stream time, and the last record applied from each source of a repartition topic
    (``applied``: source prefix → ``offset << 32 | sequence``, see ``_stateful.py``)."""

    positions: dict[TopicPartition, int]
    stream_time_ms: int | None
    applied: dict[bytes, int]


def encode_checkpoint(
    positions: dict[TopicPartition, int],
    stream_time_ms: int | None,
    applied: dict[bytes, int] | None = None,
) -> bytes:
    """Return the value of a checkpoint record."""
    fields: dict[str, Any] = {
        "v": CHECKPOINT_VERSION,
        "positions": [[tp.topic, tp.partition, offset] for tp, offset in positions.items()],
        "stream_time_ms": stream_time_ms,
    }
    if applied:
        fields["applied"] = {prefix.decode(): mark for prefix, mark in applied.items()}
    return orjson.dumps(fields)


def decode_checkpoint(data: bytes) -> Checkpoint:
    """Return what a checkpoint record says (nothing if it is unreadable)."""
    try:
        fields = orjson.loads(data)
        positions = {TopicPartition(t, p): o for t, p, o in fields["positions"]}
        stream_time = fields.get("stream_time_ms")
        applied = {k.encode(): int(v) for k, v in (fields.get("applied") or {}).items()}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return Checkpoint({}, None, {})
    return Checkpoint(positions, stream_time if isinstance(stream_time, int) else None, applied)


def without_checkpoints(
    keys: list[bytes | None], values: list[bytes | None]
) -> tuple[list[bytes | None], list[bytes | None], bytes | None]:
    """Return changelog records without their checkpoint records, and the last of those
    (None: there was none). Searched for in C (``list.index``): one per flush."""
    found: list[int] = []
    at = 0
    while True:
        try:
            at = keys.index(CHECKPOINT_KEY, at)
        except ValueError:
            break
        found.append(at)
        at += 1
    if not found:
        return keys, values, None
    checkpoint = values[found[-1]]
    kept_keys: list[bytes | None] = []
    kept_values: list[bytes | None] = []
    start = 0
    for at in found:
        kept_keys += keys[start:at]
        kept_values += values[start:at]
        start = at + 1
    kept_keys += keys[start:]
    kept_values += values[start:]
    return kept_keys, kept_values, checkpoint


class MemoryStore:
    """A store whose state is a dict; see the module docstring.

    ``data`` is the state itself; a step may read and write it directly, then call
    :meth:`touched` with the keys it changed (and those it created). Concurrency: one
    task at a time.
    """

    kind = StoreKind.MEMORY

    def __init__(self, spec: StoreSpec) -> None:
        self.spec = spec
        self.data: dict[Any, Any] = {}
        #: Keys changed since the last flush.
        self.dirty: set[Any] = set()
        #: Keys created since the last flush that no flush has written yet.
        self.created: set[Any] = set()
        #: The input position each input partition's state covers (from a restore).
        self.covers: dict[TopicPartition, int] = {}
        #: The last record applied from each source of a repartition topic (see
        #: ``_stateful.py``); the steps of a task share one dict.
        self.applied: dict[bytes, int] = {}
        #: The step's stream time when the state was last flushed (or restored).
        self.stream_time_ms: int | None = None
        #: The changelog offset the state reflects (its end after a restore or flush).
        self.changelog_offset: int | None = None
        #: The input positions of the last checkpoint record written.
        self.checkpoint_positions: dict[TopicPartition, int] | None = None
        self.restored = 0
        self.restore_total = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec.name!r}: {len(self)} keys>"

    # -- what a processor uses ----------------------------------------------------------

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, key: object) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def get(self, key: Any, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default``."""
        return self.data.get(key, default)

    def put(self, key: Any, value: Any) -> None:
        """Set ``key`` to ``value``."""
        if key not in self.dirty and key not in self:
            self.created.add(key)
        self.data[key] = value
        self.dirty.add(key)

    def delete(self, key: Any) -> None:
        """Remove ``key`` (nothing if absent)."""
        if self.data.pop(key, _MISSING) is not _MISSING:
            self.dirty.add(key)

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Return the keys and values (a snapshot: the store may change meanwhile)."""
        return iter(list(self.data.items()))

    def all_keys(self) -> list[Any]:
        """Return every key (a snapshot)."""
        return list(self.data)

    # -- what steps use ---------------------------------------------------------------

    def load(self, keys: Iterable[Any]) -> None:
        """Make ``keys`` readable from :attr:`data` (a memory store holds them all)."""

    def touched(self, keys: Iterable[Any], created: Iterable[Any] = ()) -> None:
        """Note that ``keys`` changed, and that ``created`` (among them) did not exist
        before."""
        dirty = self.dirty
        if created:
            self.created.update(set(created).difference(dirty))  # in C, not a loop here
        dirty.update(keys)

    def covered_from(self, tp: TopicPartition) -> int | None:
        """Return the offset of ``tp`` below which the state already covers the input
        (None: nothing to skip), forgetting it once the task reads past it."""
        return self.covers.get(tp)

    def passed(self, tp: TopicPartition, position: int) -> None:
        """Note that the task's position in ``tp`` reached ``position``."""
        covered = self.covers.get(tp)
        if covered is not None and position >= covered:
            del self.covers[tp]

    # -- the changelog ------------------------------------------------------------------

    def flush(
        self, positions: dict[TopicPartition, int]
    ) -> tuple[list[bytes | None], list[bytes | None]]:
        """Return the changelog records of the changes since the last flush (the latest
        value per key; tombstones for removed keys), then the checkpoint record of
        ``positions``; forget the changes."""
        dirty, created, data = self.dirty, self.created, self.data
        encode_key, encode_value = self.spec.keys.encode, self.spec.encode_value
        if created:
            # Keys made and removed since the last flush were never written: leave them
            # out with two C loops over the hashes the sets hold (a window key is a
            # tuple, hashed anew on every lookup of it).
            dirty.difference_update(created.difference(data))
        # The rest is one record per key: look them all up in one C loop and, when none
        # was removed (the usual case; checked by identity, as values may be anything),
        # encode them without a Python loop.
        latest = list(map(data.get, dirty, repeat(_MISSING)))
        keys: list[bytes | None]
        values: list[bytes | None]
        if not any(map(is_, latest, repeat(_MISSING))):
            keys = list(map(encode_key, dirty))
            found = dumps_each(latest) if encode_value is _encode_json_value else None
            values = found if found is not None else list(map(encode_value, latest))
        else:
            keys, values = [], []
            for key, value in zip(dirty, latest, strict=True):
                keys.append(encode_key(key))
                values.append(None if value is _MISSING else encode_value(value))
        self.dirty = set()
        self.created = set()
        self.checkpoint_positions = dict(positions)
        keys.append(CHECKPOINT_KEY)
        values.append(encode_checkpoint(positions, self.stream_time_ms, self.applied))
        self.flushed(keys, values)
        return keys, values

    def flushed(self, keys: list[bytes | None], values: list[bytes | None]) -> None:
        """Keep what was flushed until it is durable in the changelog (a local copy
        writes it then; a memory store has nothing to keep)."""

    def checkpointed(self, changelog_offset: int) -> None:
        """Note that the changelog is durable up to ``changelog_offset``."""
        self.changelog_offset = changelog_offset

    def apply_changelog(self, keys: list[bytes | None], values: list[bytes | None]) -> None:
        """Apply changelog records (in offset order) to the state: a restore's step.

        Without tombstones the records go into the state in order, each key's last
        value winning, with no dict of the latest ones built first (a restore is
        mostly decoding: one C call per record); with tombstones, the latest record of
        each key decides."""
        self.restored += len(keys)
        keys, values, checkpoint = without_checkpoints(keys, values)
        if checkpoint is not None:
            self.take_checkpoint(decode_checkpoint(checkpoint))
        decode_key, decode_value = self.spec.keys.decode, self.spec.decode_value
        data = self.data
        if None in values or None in keys:
            latest = dict(zip(keys, values, strict=True))
            latest.pop(None, None)
            for key in [k for k, v in latest.items() if v is None]:
                del latest[key]
                data.pop(decode_key(key), None)  # type: ignore[arg-type]
            keys, values = list(latest), list(latest.values())
        if decode_key is not _identity:
            keys = list(map(decode_key, keys))  # type: ignore[arg-type]
        if decode_value is exact_loads:
            decoded = exact_loads_each(values)  # type: ignore[arg-type]
        else:
            decoded = list(map(decode_value, values))  # type: ignore[arg-type]
        data.update(zip(keys, decoded, strict=True))

    def take_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Take what a restored checkpoint says the state covers."""
        self.covers = checkpoint.positions
        self.applied = checkpoint.applied
        if checkpoint.stream_time_ms is not None:
            self.stream_time_ms = checkpoint.stream_time_ms

    def local_offset(self) -> int | None:
        """Return the changelog offset a local copy reflects (None: no local copy)."""
        return self.changelog_offset

    def close(self) -> None:
        """Release what the store holds outside memory (nothing, here)."""

    def wipe(self) -> None:
        """Forget the state (before a full restore)."""
        self.data.clear()
        self.dirty = set()
        self.created = set()
        self.covers = {}
        self.applied = {}
        self.changelog_offset = None


Store = MemoryStore
