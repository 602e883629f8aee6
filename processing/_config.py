"""An app's runtime settings."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ._errors import TopologyError


@dataclass(frozen=True, kw_only=True, slots=True)
class AppConfig:
    """How an app runs. Immutable; every field is checked on construction.

    :param commit_interval_ms: how often the positions of processed (and durably
        written) records are committed; a crash re-processes at most about this much.
    :param max_batch_bytes: how much one partition task reads at a time: the unit of
        work, of memory use per partition, and of backpressure. The default keeps a
        batch's outputs under a topic's default ``max_message_bytes`` (one append each)
        and lets the allocator reuse one batch's memory for the next (larger batches
        measured no faster).
    :param state_dir: where disk state stores keep their local copies; by default the
        embedded log's ``<data_dir>/.state`` (the store skips dotted folders), else
        ``./headwater-state``.
    :param max_task_idle_ms: how long a task that reads several partitions (a join's
        sides) waits for one of them that has no records yet before it processes the
        others' later records (Kafka Streams' ``max.task.idle.ms``, whose default, 0,
        this keeps: a task processes its partitions' batches in timestamp order, waiting
        only for partitions known to hold records). Give a join whose sides arrive at
        different speeds (one through more repartition topics than the other) a few
        hundred ms, so that one side does not run ahead and leave the other's records
        late.
    :raises TopologyError: if a value is out of range.
    """

    commit_interval_ms: int = 1000
    max_batch_bytes: int = 512 << 10
    state_dir: str | None = None
    max_task_idle_ms: int = 0

    def __post_init__(self) -> None:
        for name, low in (
            ("commit_interval_ms", 1),
            ("max_batch_bytes", 64),
            ("max_task_idle_ms", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise TopologyError(f"AppConfig.{name} must be an integer >= {low}, got {value!r}")
        if self.state_dir is not None and not isinstance(self.state_dir, str | os.PathLike):
            raise TopologyError(f"AppConfig.state_dir must be a path, got {self.state_dir!r}")
