"""Restore from a changelog, straight through the store functions: the state it gives, and
the progress it reports on the way."""

from __future__ import annotations

import itertools
import logging
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.groups import TopicPartition
from headwater.processing import App
from headwater.processing._backends.memory import MemoryBackend
from headwater.processing._clock import VirtualClock
from headwater.processing._pipeline import Pipeline
from headwater.processing._stores import (
    BYTES_KEYS,
    CHECKPOINT_KEY,
    StoreKind,
    StoreSpec,
    encode_checkpoint,
)
from headwater.processing._stores._changelog import StoreRegistry, restore
from headwater.processing._tasks import TaskId, TopicGroup
from headwater.store import Record


async def test_a_restore_reports_its_progress_and_gives_the_latest_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = MemoryBackend()
    backend.create_topic_now("app-n-changelog", 1, {"cleanup.policy": "compact"})
    records = [Record(i, 0, b'"k%d"' % (i % 40), orjson.dumps(i), ()) for i in range(100)]
    records.append(Record(100, 0, b'"k0"', None, ()))  # a tombstone
    checkpoint = encode_checkpoint({TopicPartition("in", 0): 7}, 1234, {b"in/0": 6 << 32})
    records.append(Record(101, 0, CHECKPOINT_KEY, checkpoint, ()))
    for start in range(0, len(records), 10):  # batches of 10, as flushes write them
        backend.append("app-n-changelog", 0, records[start : start + 10])
    pipeline = Pipeline(App("app").graph, TopicGroup(0, ("in",), 1, ()), {"in": 1})
    task = pipeline.task(TaskId(0, 0), VirtualClock(0))
    store = task.open_store(StoreSpec("n", "app-n-changelog", keys=BYTES_KEYS))
    with caplog.at_level(logging.INFO, logger="headwater.processing"):
        await restore(task, backend, progress_every=30, fetch_bytes=1)  # a batch a fetch
    progress = [r.getMessage() for r in caplog.records if "restoring store" in r.getMessage()]
    assert progress[0].endswith("30 of 102 records")  # read in fetches of whole batches
    assert len(progress) == 3
    assert "restored store 'n' from app-n-changelog/0: 102 of 102 records" in caplog.text
    assert len(store) == 39 and b'"k0"' not in store and store.get(b'"k1"') == 81
    assert store.covers == {TopicPartition("in", 0): 7} and store.stream_time_ms == 1234
    assert store.applied == {b"in/0": 6 << 32}


changelog_records = st.lists(
    st.one_of(
        st.tuples(st.sampled_from([b'"a"', b'"b"', b'"c"', b'"d"']),
                  st.one_of(st.none(), st.integers(0, 99).map(orjson.dumps))),
        st.integers(0, 50).map(lambda n: (CHECKPOINT_KEY, encode_checkpoint({}, n))),
    ),
    max_size=40,
)  # fmt: skip


@pytest.mark.parametrize("kind", [StoreKind.MEMORY, StoreKind.DISK])
@given(records=changelog_records, cuts=st.lists(st.integers(0, 40), max_size=6))
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_applying_a_changelog_in_any_fetches_gives_each_keys_last_value(
    tmp_path: Path, kind: StoreKind, records: list[tuple[bytes, bytes | None]], cuts: list[int]
) -> None:
    # The model: each record in order, a tombstone removing its key; the last checkpoint.
    model: dict[bytes, Any] = {}
    stream_time = None
    for key, value in records:
        if key == CHECKPOINT_KEY:
            stream_time = orjson.loads(value or b"{}")["stream_time_ms"]
        elif value is None:
            model.pop(key, None)
        else:
            model[key] = orjson.loads(value)
    spec = StoreSpec("n", "app-n-changelog", kind, BYTES_KEYS)
    registry = StoreRegistry(tmp_path / str(uuid.uuid4()), "app")
    store = registry.open(TaskId(0, 0), spec)
    bounds = sorted({0, len(records), *(c for c in cuts if c <= len(records))})
    for start, stop in itertools.pairwise(bounds):  # the fetches a restore made
        part = records[start:stop]
        store.apply_changelog([k for k, _ in part], [v for _, v in part])
    assert dict(store.items()) == model
    assert store.stream_time_ms == stream_time
    assert store.restored == len(records)
    store.close()
