"""An app's runtime settings."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ._errors import TopologyError

#: The guarantees an app can run with (``AppConfig.guarantee``).
AT_LEAST_ONCE = "at_least_once"
EXACTLY_ONCE = "exactly_once"
#: How long a transaction of an exactly-once run may stay open before the cluster aborts
#: it (Kafka Streams' default for its transactional producers).
TRANSACTION_TIMEOUT_MS = 10_000
_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")


@dataclass(frozen=True, kw_only=True, slots=True)
class AppConfig:
    """How an app runs. Immutable; every field is checked on construction.

    :param commit_interval_ms: how often the positions of processed (and durably
        written) records are committed; a crash re-processes at most about this much.
    :param max_batch_bytes: how much one partition task reads at a time: the unit of
        work, of memory use per partition, and of backpressure. ``None`` (the default)
        leaves it to where the log is: 128 KiB in a data directory or in memory, where a
        batch then stays in the processor's caches from decoding to writing, and 512
        KiB on a Kafka cluster, where each batch's writes wait a round trip for their
        acknowledgement. Both keep a batch's outputs under a topic's default
        ``max_message_bytes`` (one append each).
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
    :param session_timeout_ms: on a cluster, how long the app's consumer group waits for
        a member that stopped answering (a crashed worker) before its partitions move to
        the others: Kafka's ``session.timeout.ms``, whose default this is. The cluster
        bounds it (Kafka's ``group.min.session.timeout.ms``, 6 s by default).
    :param guarantee: ``"at_least_once"`` (the default: after a crash, the records after
        the last commit are processed again, and their outputs repeat) or
        ``"exactly_once"``: each commit interval's outputs, state changes and input
        positions are one transaction, visible together or not at all to downstream
        readers that read committed records (``isolation.level=read_committed``), on a
        data directory (the store's transactions) and on a Kafka-protocol cluster.
    :param instance_id: this worker's stable identity among the app's workers (unique per
        worker, the same across its restarts). On a cluster it is the group member's
        ``group.instance.id`` (static membership: a restarted worker takes its partitions
        back without waiting for its old session to expire) and, with ``exactly_once``,
        part of its transactional id (on a data directory too: ``<app>-<instance_id>``,
        else the app's name), so that a restarted worker fences the one it
        replaces and aborts the transaction that one left open at once (without it, an
        open transaction of a crashed worker holds downstream readers back until its
        ``transaction.timeout.ms``, ``TRANSACTION_TIMEOUT_MS``, runs out).
    :param repartition_purge_interval_ms: at most how often the app deletes the records
        of its repartition topics that it has committed past (they are kept with no
        retention until then; Kafka Streams' ``repartition.purge.interval.ms``, whose
        default this is). ``None`` keeps them all: ``headwater trace`` then follows an
        output through its repartition topics back to its input at any age, while those
        topics grow without bound.
    :raises TopologyError: if a value is out of range.
    """

    commit_interval_ms: int = 1000
    max_batch_bytes: int | None = None
    state_dir: str | None = None
    max_task_idle_ms: int = 0
    session_timeout_ms: int = 45_000
    guarantee: str = AT_LEAST_ONCE
    instance_id: str | None = None
    repartition_purge_interval_ms: int | None = 30_000

    def __post_init__(self) -> None:
        for name, low in (
            ("commit_interval_ms", 1),
            ("max_batch_bytes", 64),
            ("max_task_idle_ms", 0),
            ("session_timeout_ms", 1),
        ):
            value = getattr(self, name)
            if name == "max_batch_bytes" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise TopologyError(f"AppConfig.{name} must be an integer >= {low}, got {value!r}")
        purge = self.repartition_purge_interval_ms
        if purge is not None and (type(purge) is not int or purge < 0):
            raise TopologyError(
                "AppConfig.repartition_purge_interval_ms must be an integer >= 0 or None, "
                f"got {purge!r}"
            )
        if self.state_dir is not None and not isinstance(self.state_dir, str | os.PathLike):
            raise TopologyError(f"AppConfig.state_dir must be a path, got {self.state_dir!r}")
        if self.guarantee not in (AT_LEAST_ONCE, EXACTLY_ONCE):
            raise TopologyError(
                f"AppConfig.guarantee must be {AT_LEAST_ONCE!r} or {EXACTLY_ONCE!r}, "
                f"got {self.guarantee!r}"
            )
        if self.instance_id is not None and not (
            isinstance(self.instance_id, str) and _INSTANCE_ID.fullmatch(self.instance_id)
        ):
            raise TopologyError(
                "AppConfig.instance_id must be 1-100 letters, digits, '.', '_' or '-', "
                f"got {self.instance_id!r}"
            )
