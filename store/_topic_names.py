"""Topic names: which are allowed, which are reserved, which collide.

Theory of operation
-------------------
A topic name is 1-249 of ``[A-Za-z0-9._-]``, as Kafka allows, and does not start with
``.`` (the store keeps such names for its own bookkeeping in the data directory).

Names starting with ``__`` are reserved for internal topics, the system's own
(``__consumer_offsets``, where committed offsets live). A user who creates, writes,
deletes or reconfigures one could break what headwater keeps there -- a delete policy
and a retention on ``__consumer_offsets`` would expire committed offsets, a record
produced into it would not decode -- so the store refuses those operations unless the
caller says it is headwater's own code (``internal=True``, as Kafka's replica manager
takes ``internalTopicsAllowed``). Reading an internal topic stays allowed.

Two names that differ only in ``.`` against ``_`` collide, as in Kafka (whose metric
names replace one with the other): a store never holds both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ._errors import InvalidTopicError

#: Topics whose names start with this are the system's own (committed offsets, ...).
INTERNAL_PREFIX = "__"
_TOPIC_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,248}")


def validate_topic_name(name: str) -> None:
    """Check a topic name: 1-249 of ``[A-Za-z0-9._-]``, as Kafka allows, not starting with '.'.

    Names starting with '.' are kept for the store's own bookkeeping in the data directory.

    :raises InvalidTopicError: if the name is not allowed.
    """
    if not isinstance(name, str) or not _TOPIC_NAME.fullmatch(name):
        raise InvalidTopicError(
            f"invalid topic name {name!r}: use 1-249 letters, digits, '.', '_' or '-',"
            " not starting with '.'"
        )


def is_internal_topic(name: str) -> bool:
    """Return whether ``name`` is reserved for the system's own topics (it starts with ``__``)."""
    return name.startswith(INTERNAL_PREFIX)


def check_not_internal(name: str, operation: str) -> None:
    """Refuse ``operation`` (a verb phrase: "create", "append to") on a reserved name.

    :raises InvalidTopicError: if ``name`` starts with ``__``.
    """
    if is_internal_topic(name):
        raise InvalidTopicError(
            f"cannot {operation} topic {name!r}: names starting with {INTERNAL_PREFIX!r} are "
            "reserved for headwater's internal topics (such as __consumer_offsets)"
        )


def colliding_topic(name: str, existing: Iterable[str]) -> str | None:
    """Return a name of ``existing`` that ``name`` collides with (``.`` read as ``_``), if any.

    ``name`` itself does not count as a collision. The least such name is returned, so
    that the answer does not depend on the order of ``existing``.
    """
    if "." not in name and "_" not in name:
        return None
    unified = name.replace(".", "_")
    return min(
        (other for other in existing if other != name and other.replace(".", "_") == unified),
        default=None,
    )
