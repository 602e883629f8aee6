"""The processing subtree of headwater's errors, and what a user function's failure becomes.

::

    HeadwaterError                    (headwater.store)
    └── ProcessingError
        ├── TopologyError             the graph cannot run: no sink, a topic both read and
        │                             written, a stream of another app, a bad name
        ├── MissingSourceTopicError   a topic the app reads does not exist (and the app
        │                             did not ask for it to be created)
        ├── SerdeError                a value could not be (de)serialised
        ├── ClusterError              a Kafka-protocol cluster could not be reached, or
        │                             failed a request the run cannot go on without
        └── OperatorError             a user function raised under the ``raise`` policy:
                                      names the operator, the source record and the
                                      user's own line

An operator's failure is never retried by the runtime (only async operators retry, as
their ``retry`` says); what happens next is the stream's :class:`ErrorPolicy`.
"""

from __future__ import annotations

import enum
import traceback
from pathlib import Path

from headwater.store import HeadwaterError

_PACKAGE_DIR = str(Path(__file__).parent)


class ProcessingError(HeadwaterError):
    """Root of the errors raised by the processing DSL and its runtime."""


class TopologyError(ProcessingError):
    """The operator graph is not valid: it cannot be built or run as described."""


class MissingSourceTopicError(ProcessingError):
    """Topics the app reads do not exist, and the app did not ask for them to be created.

    Kafka Streams' ``MissingSourceTopicException``: an app never creates the topics it
    reads unless told to (``app.stream(topic, partitions=N)``), since a misspelt topic
    or data directory would otherwise look like an app with nothing to do.

    :ivar topics: the missing topics, sorted. :ivar location: where they were looked
        for (``data directory ./headwater-data``), if known. ``bootstrap`` names the
        cluster they were looked for on, for the command that creates them.
    """

    def __init__(
        self, topics: list[str], location: str | None = None, *, bootstrap: str | None = None
    ) -> None:
        self.topics = sorted(topics)
        self.location = location
        names = ", ".join(repr(t) for t in self.topics)
        where = f" in {location}" if location else ""
        first = self.topics[0]
        on = "" if bootstrap is None else f" --bootstrap {bootstrap}"
        super().__init__(
            f"missing source topic{'s' if len(self.topics) > 1 else ''} {names}{where}: "
            f"create {'them' if len(self.topics) > 1 else 'it'} first "
            f"(headwater topics create {first} --partitions N{on}), or let the app create "
            f"{'them' if len(self.topics) > 1 else 'it'} with "
            f"app.stream({first!r}, partitions=N)"
        )


class SerdeError(ProcessingError):
    """A value could not be serialised or deserialised by its :class:`Serde`."""


class ClusterError(ProcessingError):
    """A Kafka-protocol cluster could not be reached, or failed a request the run cannot
    go on without; the message names the bootstrap address and Kafka's reason."""


class TransactionAbortedError(ClusterError):
    """An exactly-once run's transaction was aborted (its commit failed, or the group
    took partitions away): the outputs, changelog records and input positions since the
    last commit are discarded together, and the tasks resume from that commit."""


class ProducerFencedError(ClusterError):
    """An exactly-once run's transactional producer was fenced: another worker with the
    same transactional id (a restart of this one, or its replacement) took over. The
    run stops without committing; what it had not committed is aborted."""


class OperatorError(ProcessingError):
    """A user function failed on a record and the stream's policy is ``raise``.

    :ivar operator: the operator's description (``#2 map parse (app.py:12)``).
    :ivar topic: the source topic of the record. :ivar partition: its partition.
    :ivar offset: its offset. :ivar location: the user's line that raised, if found.
    """

    def __init__(
        self,
        operator: str,
        topic: str,
        partition: int,
        offset: int,
        error: BaseException,
    ) -> None:
        self.operator = operator
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.location = user_frame(error)
        where = f" at {self.location}" if self.location else ""
        super().__init__(
            f"operator {operator} failed on {topic}/{partition} offset {offset}: "
            f"{describe_exception(error)}{where}"
        )


class ErrorPolicy(enum.StrEnum):
    """What a stream does with a record whose user function raised.

    ``raise`` (the default): the partition's task stops and the app fails with an
    :class:`OperatorError`; nothing after the failing record is committed, so a fixed
    app resumes at that record. ``skip``: the record is counted, logged and dropped.
    ``dead_letter``: the source record goes, as it was read, to the stream's dead-letter
    topic (``<stream>-dlq``) with ``headwater.error.*`` headers and its source position.
    """

    RAISE = "raise"
    SKIP = "skip"
    DEAD_LETTER = "dead_letter"


def parse_policy(policy: object) -> ErrorPolicy:
    """Return ``policy`` as an :class:`ErrorPolicy`.

    :raises TopologyError: if it names none.
    """
    try:
        return ErrorPolicy(policy)  # type: ignore[arg-type] # checked here
    except ValueError:
        raise TopologyError(
            f"unknown error policy {policy!r}; use 'raise', 'skip' or 'dead_letter'"
        ) from None


def describe_exception(error: BaseException) -> str:
    """Return ``Type: message`` for ``error`` (just the type when the message is empty)."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def user_frame(error: BaseException) -> str | None:
    """Return ``file:line in function: source`` of the user's function that raised.

    That is the first frame below the operator that is not headwater's (nor tenacity's,
    anyio's or trio's): the line of the user's function that raised or called into the
    code that did, which an operator error names so that a traceback is not needed.
    """
    for frame in traceback.extract_tb(error.__traceback__):
        name = frame.filename
        if name.startswith(_PACKAGE_DIR) or any(part in name for part in _LIBRARY_PARTS):
            continue
        line = f": {frame.line.strip()}" if frame.line else ""
        return f"{Path(name).name}:{frame.lineno} in {frame.name}{line}"
    return None


_LIBRARY_PARTS = ("/tenacity/", "/anyio/", "/trio/", "<frozen")
