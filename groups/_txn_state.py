"""The state of one transactional id, its checks, and its record in ``__transaction_state``. Pure.

Theory of operation
-------------------
A transactional producer is known by its *transactional id*, which keeps one producer id
across restarts of the producer; each InitProducerId bumps the *epoch*, and a batch or
request with an older epoch is a zombie's, refused (fencing). The coordinator keeps per
transactional id a :class:`TxnMetadata` moving through Kafka's states::

    EMPTY --AddPartitions/AddOffsets--> ONGOING --EndTxn--> PREPARE_COMMIT --> COMPLETE_COMMIT
                                                  \\------> PREPARE_ABORT  --> COMPLETE_ABORT
    (COMPLETE_* behave as EMPTY for the next transaction; a timeout or a new producer's
    InitProducerId aborts an ONGOING one)

``PREPARE_*`` is the decision: once that record is durable the transaction will end that
way, whatever crashes -- a restarted coordinator finishes it (markers to every partition,
the committed offsets to their groups), and finishing twice changes nothing. ``ONGOING``
carries the partitions written, the groups added with AddOffsetsToTxn and the offsets
TxnOffsetCommit sent (visible to their groups only once the transaction commits).

Every change is one record of the compacted internal topic ``__transaction_state``: key
the transactional id (UTF-8), value the metadata as JSON (orjson). The latest record per
key is the state; loading replays the topic in order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import orjson

from ._txn_codes import TxnCode

TRANSACTION_STATE_TOPIC = "__transaction_state"
"""The internal compacted topic holding every transactional id's state."""

MAX_EPOCH = 0x7FFF
DEFAULT_MAX_TIMEOUT_MS = 15 * 60 * 1000
"""Kafka's ``transaction.max.timeout.ms``: the longest timeout a producer may ask for."""

TopicPartition = tuple[str, int]


class TxnState(enum.Enum):
    """Where a transactional id's current transaction stands (module docstring)."""

    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"

    @property
    def deciding(self) -> bool:
        """Whether the transaction is decided but not yet finished everywhere."""
        return self in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT)


@dataclass(frozen=True, slots=True)
class PendingOffset:
    """An offset a transaction will commit for a group."""

    offset: int
    metadata: str = ""
    leader_epoch: int | None = None


@dataclass(slots=True)
class TxnMetadata:
    """The coordinator's state of one transactional id (see the module docstring)."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState = TxnState.EMPTY
    partitions: set[TopicPartition] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    offsets: dict[str, dict[TopicPartition, PendingOffset]] = field(default_factory=dict)
    #: When the current or last transaction began (epoch ms); -1 when none began since the
    #: producer's InitProducerId (Kafka keeps and shows it alike).
    started_ms: int = -1
    #: When this state was last written (epoch ms), -1 if not known.
    updated_ms: int = -1

    def check_producer(self, producer_id: int, producer_epoch: int) -> TxnCode:
        """Return ``NONE`` if the request comes from the current producer, else why not."""
        if producer_id != self.producer_id:
            return TxnCode.INVALID_PRODUCER_ID_MAPPING
        if producer_epoch != self.producer_epoch:
            return TxnCode.INVALID_PRODUCER_EPOCH
        return TxnCode.NONE

    def begin(self, now_ms: int) -> None:
        """Open a transaction, unless one is open."""
        if self.state is not TxnState.ONGOING:
            self.state = TxnState.ONGOING
            self.partitions.clear()
            self.groups.clear()
            self.offsets.clear()
            self.started_ms = now_ms

    def deadline_ms(self) -> int | None:
        """When an open transaction times out, else ``None``."""
        if self.state is not TxnState.ONGOING:
            return None
        return self.started_ms + self.timeout_ms

    def expires_ms(self, expiration_ms: int) -> int | None:
        """When this transactional id expires unless used again: ``expiration_ms`` after
        its last write, while no transaction is open or being finished; else ``None``."""
        if self.state is TxnState.ONGOING or self.state.deciding or self.updated_ms < 0:
            return None
        return self.updated_ms + expiration_ms

    def bump_epoch(self, new_producer_id: int) -> None:
        """Fence the current producer: the next epoch, or ``new_producer_id`` at epoch 0 once
        the epoch would overflow (Kafka does the same)."""
        if self.producer_epoch >= MAX_EPOCH - 1:
            self.producer_id, self.producer_epoch = new_producer_id, 0
        else:
            self.producer_epoch += 1

    def finish(self) -> None:
        """Mark a decided transaction complete and forget what it wrote (not when it began)."""
        assert self.state.deciding, self.state
        self.state = (
            TxnState.COMPLETE_COMMIT
            if self.state is TxnState.PREPARE_COMMIT
            else TxnState.COMPLETE_ABORT
        )
        self.partitions.clear()
        self.groups.clear()
        self.offsets.clear()

    # -- the record ----------------------------------------------------------------------

    def encode(self) -> bytes:
        """Return the value of this state's record in ``__transaction_state``."""
        return orjson.dumps(
            {
                "producer_id": self.producer_id,
                "producer_epoch": self.producer_epoch,
                "timeout_ms": self.timeout_ms,
                "state": self.state.value,
                "partitions": sorted(self.partitions),
                "groups": sorted(self.groups),
                "offsets": {
                    group: [
                        [t, p, o.offset, o.metadata, o.leader_epoch]
                        for (t, p), o in sorted(offsets.items())
                    ]
                    for group, offsets in self.offsets.items()
                },
                "started_ms": self.started_ms,
                "updated_ms": self.updated_ms,
            }
        )

    @classmethod
    def decode(cls, transactional_id: str, value: bytes) -> TxnMetadata:
        """Rebuild a state from its record.

        :raises ValueError: if ``value`` is not a state record.
        """
        try:
            doc: dict[str, Any] = orjson.loads(value)
            return cls(
                transactional_id,
                int(doc["producer_id"]),
                int(doc["producer_epoch"]),
                int(doc["timeout_ms"]),
                TxnState(doc["state"]),
                {(str(t), int(p)) for t, p in doc["partitions"]},
                {str(g) for g in doc["groups"]},
                {
                    str(group): {
                        (str(t), int(p)): PendingOffset(
                            int(o), str(m), None if e is None else int(e)
                        )
                        for t, p, o, m, e in offsets
                    }
                    for group, offsets in doc["offsets"].items()
                },
                int(doc["started_ms"]),
                int(doc.get("updated_ms", -1)),  # absent from records of earlier versions
            )
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"not a transaction state record: {exc}") from exc
