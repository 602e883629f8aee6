"""Lineage: the headers that tie every derived record to the record it came from.

Every record the runtime writes (to an output, a repartition topic or a dead-letter topic)
carries the header ``headwater.source`` whose value is ``TOPIC/PARTITION/OFFSET`` of the
input record it was derived from (topic names never contain ``/``). A record read back
from a repartition topic names that topic, whose record in turn names the original, so
following the headers from any result walks back to the events that produced it:
``headwater trace TOPIC PARTITION OFFSET`` prints that chain.

A record written to a repartition topic from an input record that made several such
records (a ``flat_map``, a fan-out merged again) also carries ``headwater.seq``: its
number among them (0, 1, ...; absent means 0). The source and that number identify the
record, so a stateful step that reads the topic back can tell a record it has applied
from the same one written again by an upstream task that re-processed its uncommitted
tail after a crash (see ``_stateful.py``).

Other headers of the input record travel with the derived one; headers under
``headwater.`` are the runtime's own and are replaced, never copied. A dead-letter record
also carries ``headwater.error.operator``, ``.type``, ``.message`` and ``.location``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

#: The header naming a derived record's source.
SOURCE_HEADER = "headwater.source"
#: The prefix of the runtime's own headers.
HEADER_PREFIX = "headwater."
#: The header numbering the records one input record made in a repartition topic.
SEQUENCE_HEADER = "headwater.seq"
ERROR_OPERATOR = "headwater.error.operator"
ERROR_TYPE = "headwater.error.type"
ERROR_MESSAGE = "headwater.error.message"
ERROR_LOCATION = "headwater.error.location"

_SOURCE = re.compile(rb"([A-Za-z0-9._-]+)/([0-9]+)/([0-9]+)")

Headers = tuple[tuple[str, bytes | None], ...]


class SourcePosition(NamedTuple):
    """Where a record was read: topic, partition, offset."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


def source_prefix(topic: str, partition: int) -> bytes:
    """Return the start of a ``headwater.source`` value for records of one partition."""
    return f"{topic}/{partition}/".encode()


def source_of(headers: Sequence[tuple[str, bytes | None]]) -> SourcePosition | None:
    """Return the position named by a record's ``headwater.source`` header, if any.

    A malformed value counts as none (a record from elsewhere may carry anything).
    """
    for name, value in headers:
        if name == SOURCE_HEADER and value is not None:
            match = _SOURCE.fullmatch(value)
            if match is None:
                return None
            return SourcePosition(match[1].decode(), int(match[2]), int(match[3]))
    return None


def user_headers(headers: Sequence[tuple[str, bytes | None]]) -> Headers:
    """Return ``headers`` without the runtime's own (``headwater.*``)."""
    return tuple(h for h in headers if not h[0].startswith(HEADER_PREFIX))
