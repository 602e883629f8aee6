"""Restore from a changelog, straight through the store functions: the state it gives, and
the progress it reports on the way."""

from __future__ import annotations

import logging

import orjson
import pytest

from headwater.groups import TopicPartition
from headwater.processing import App
from headwater.processing._backends.memory import MemoryBackend
from headwater.processing._clock import VirtualClock
from headwater.processing._pipeline import Pipeline
from headwater.processing._stores import BYTES_KEYS, CHECKPOINT_KEY, StoreSpec, encode_checkpoint
from headwater.processing._stores._changelog import restore
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
