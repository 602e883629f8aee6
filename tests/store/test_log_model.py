"""Model-based test: PartitionLog against an in-memory list of records."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from headwater.store import NewRecord, OffsetOutOfRangeError, PartitionLog, TopicConfig
from headwater.store._partition import records_from

CONFIG = TopicConfig(segment_bytes=1500, index_interval_bytes=200, retention_bytes=4000)

record_values = st.binary(min_size=0, max_size=120)
batches = st.lists(
    st.tuples(record_values, st.integers(min_value=0, max_value=10_000)), min_size=1, max_size=8
)


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="hw-model-"))
        self.log = PartitionLog.open(self.dir, CONFIG)
        # offset -> (value, timestamp) for every record the log should still hold
        self.model: dict[int, tuple[bytes, int]] = {}
        self.end = 0

    def teardown(self) -> None:
        if not self.log.closed:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(batch=batches)
    def append(self, batch: list[tuple[bytes, int]]) -> None:
        info = self.log.append([NewRecord(value=v, timestamp=t) for v, t in batch])
        assert info.base_offset == self.end
        for i, (v, t) in enumerate(batch):
            self.model[self.end + i] = (v, t)
        self.end += len(batch)

    @rule(data=st.data(), max_bytes=st.integers(min_value=1, max_value=3000))
    def read(self, data: st.DataObject, max_bytes: int) -> None:
        start = data.draw(st.integers(min_value=self.log.log_start_offset, max_value=self.end))
        got = records_from(self.log.read(start, max_bytes), start)
        if start < self.end:
            assert got, "a read below the end returns at least one record"
        for r in got:
            assert (r.value, r.timestamp) == self.model[r.offset]
        assert [r.offset for r in got] == list(range(start, start + len(got)))

    @rule(offset=st.integers(min_value=-5, max_value=-1))
    def read_below_start(self, offset: int) -> None:
        try:
            self.log.read(self.log.log_start_offset + offset, 100)
        except OffsetOutOfRangeError:
            return
        raise AssertionError("a read below the log start must fail")

    @rule()
    def roll(self) -> None:
        self.log.roll()

    @rule()
    def flush(self) -> None:
        self.log.flush()
        assert self.log.recovery_point == self.end

    @rule()
    def retention(self) -> None:
        before = self.log.log_start_offset
        self.log.enforce_retention()
        start = self.log.log_start_offset
        assert start >= before
        assert start <= self.log.segments[-1].base_offset
        for offset in [o for o in self.model if o < start]:
            del self.model[offset]

    @rule()
    def close_and_reopen(self) -> None:
        self.log.close()
        self.log = PartitionLog.open(self.dir, CONFIG)

    @rule()
    def crash_and_reopen(self) -> None:
        # A process crash: written bytes are in the page cache, nothing else happened.
        self.log.abandon()
        self.log = PartitionLog.open(self.dir, CONFIG)

    @precondition(lambda self: self.end > 0)
    @rule(data=st.data())
    def offset_for_time(self, data: st.DataObject) -> None:
        ts = data.draw(st.integers(min_value=-1, max_value=10_001))
        expected = min((o for o, (_, t) in self.model.items() if t >= ts), default=None)
        got = self.log.offset_for_time(ts)
        assert got == expected

    @invariant()
    def offsets_match(self) -> None:
        assert self.log.log_end_offset == self.end
        assert self.log.log_start_offset == min(self.model, default=self.end)


LogMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestLogModel = LogMachine.TestCase
