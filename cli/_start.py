"""Where a reader starts in each partition: ``--from earliest|latest|OFFSET|TIME``.

Pure: a :class:`Start` turns a partition's log start, its end and (for a time) the first
offset at that time into the offset to read from, whichever way those were learnt (the
store's partitions, or a broker's ListOffsets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import click

_OFFSET = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class Start:
    """Where to start reading each partition: ``earliest``, ``latest``, an offset or a time.

    ``value`` is the offset, or the time in epoch milliseconds.
    """

    kind: Literal["earliest", "latest", "offset", "time"]
    value: int = 0

    def position(self, log_start: int, end: int, at_time: int | None = None) -> int:
        """Return the first offset to read in a partition holding ``log_start`` to ``end``.

        :param at_time: for a time, the first offset whose timestamp is at or after it
            (``None``: no such record, so the end).
        """
        if self.kind == "earliest":
            return log_start
        if self.kind == "latest":
            return end
        if self.kind == "offset":
            return min(max(self.value, log_start), end)
        return end if at_time is None else min(max(at_time, log_start), end)


def parse_start(ctx: click.Context, param: click.Parameter, value: str) -> Start:
    """Read ``--from``: ``earliest``, ``latest``, an offset, or an ISO-8601 time (UTC unless
    it says otherwise).

    :raises click.BadParameter: for anything else.
    """
    text = value.strip()
    if text == "earliest":
        return Start("earliest")
    if text == "latest":
        return Start("latest")
    if _OFFSET.fullmatch(text):
        return Start("offset", int(text))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"expected earliest, latest, an offset or an ISO-8601 time, got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return Start("time", int(when.timestamp() * 1000))
