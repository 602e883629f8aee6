"""The dead-letter topic: input a connector could not deliver, kept with the reason.

Nothing a connector is given is dropped in silence. A line that does not parse, a record
a webhook refuses with a 4xx: each is appended, as it came, to the connector's
dead-letter topic (``<topic>-dlq`` unless configured), created on first use, with headers
that say why and where it came from:

========================  ===================================================
``headwater.error``       what was wrong, for a person
``headwater.file``        the source file (file source)
``headwater.line``        the line number in it, from 1 (file source)
``headwater.topic``       the input topic (sinks)
``headwater.partition``   the input partition (sinks)
``headwater.offset``      the input offset (sinks)
``headwater.status``      the HTTP status the destination answered (webhook sink)
========================  ===================================================

A dead-letter write is durable before the connector moves past the input it holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from headwater.store import DecimalColumn

from ._log import Appended, ConnectorLog, HeaderColumn

ERROR_HEADER = "headwater.error"
FILE_HEADER = "headwater.file"
LINE_HEADER = "headwater.line"
TOPIC_HEADER = "headwater.topic"
PARTITION_HEADER = "headwater.partition"
OFFSET_HEADER = "headwater.offset"
STATUS_HEADER = "headwater.status"


def dead_letter_topic(topic: str) -> str:
    """Return the default dead-letter topic of a connector writing or reading ``topic``."""
    return f"{topic}-dlq"


class DeadLetters:
    """Appends undeliverable input to one dead-letter topic.

    :param log: the log to write to.
    :param topic: the dead-letter topic (created on first write if missing).
    """

    def __init__(self, log: ConnectorLog, topic: str) -> None:
        self.log = log
        self.topic = topic
        self.written = 0

    async def write(
        self,
        values: Sequence[bytes | None],
        reasons: Sequence[bytes],
        *,
        keys: Sequence[bytes | None] | None = None,
        header_columns: Sequence[HeaderColumn] = (),
    ) -> Appended:
        """Append ``values`` with their ``reasons`` and further headers; return once durable."""
        if not values:
            return Appended(0, ())
        await self.log.ensure_topic(self.topic)
        appended = await self.log.append(
            self.topic,
            values,
            keys=keys,
            header_columns=[(ERROR_HEADER, reasons), *header_columns],
        )
        self.written += len(values)
        return appended

    async def write_from_partition(
        self,
        topic: str,
        partition: int,
        *,
        offsets: Sequence[int],
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None],
        reasons: Sequence[bytes],
        extra: Sequence[HeaderColumn] = (),
    ) -> Appended:
        """Append records a sink read from ``topic``/``partition`` at ``offsets``."""
        count = len(values)
        return await self.write(
            values,
            reasons,
            keys=keys,
            header_columns=[
                (TOPIC_HEADER, [topic.encode()] * count),
                (PARTITION_HEADER, [b"%d" % partition] * count),
                (OFFSET_HEADER, DecimalColumn(b"", list(offsets))),
                *extra,
            ],
        )
