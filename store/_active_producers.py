"""What a partition remembers of its producers, as Kafka's DescribeProducers shows it. Reads only.

Theory of operation
-------------------
The partition's producer state (``_producer_state.py``) keeps, per producer id, the
epoch, the last batches' sequences, the coordinator epoch of its last transaction
marker and the first offset of its open transaction. :func:`active_producers` copies
that out, one :class:`ActiveProducer` per producer the partition still knows (state
unused for ``producer.id.expiration.ms`` is dropped, unless a transaction is open), for
the tools that look for a transaction left open: its first offset is what holds the
last stable offset back.

``last_timestamp_ms`` is when the partition last recorded a batch of the producer, by
the log's clock (after a restart, the time of recovery for producers it rebuilt from the
log); Kafka reports the largest record timestamp of that batch, which a producer sets
itself and which is the same moment give or take the producer's linger.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._partition import Partition


@dataclass(frozen=True, slots=True)
class ActiveProducer:
    """One producer a partition knows (see the module docstring)."""

    producer_id: int
    producer_epoch: int
    #: The sequence of the producer's last record here, -1 if none is remembered.
    last_sequence: int
    #: When its last batch was recorded (epoch ms).
    last_timestamp_ms: int
    #: The coordinator epoch of its last transaction marker here, -1 if none.
    coordinator_epoch: int
    #: The first offset of its open transaction here, -1 when none is open.
    txn_start_offset: int


def active_producers(partition: Partition) -> list[ActiveProducer]:
    """Return the producers ``partition`` keeps state for, by producer id.

    Call it on the partition owner's event loop, as every other read of the partition's
    state; it does no I/O.
    """
    producers = partition.log.producer_state.producers
    return [
        ActiveProducer(
            producer_id=producer_id,
            producer_epoch=entry.epoch,
            last_sequence=entry.batches[-1].last_seq if entry.batches else -1,
            last_timestamp_ms=entry.last_used_ms,
            coordinator_epoch=entry.coordinator_epoch,
            txn_start_offset=entry.txn_first_offset,
        )
        for producer_id, entry in sorted(producers.items())
    ]
