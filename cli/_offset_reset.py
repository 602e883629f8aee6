"""Committing a planned offset reset in batches of partitions, saying how far it got.

``groups reset-offsets --execute`` on a topic of many partitions commits the new offsets
:data:`RESET_BATCH` partitions at a time, so that a progress bar can advance between two
commits (each commit is one request, one batch appended to ``__consumer_offsets``); a
reset of at most that many partitions is one commit, as before. Each batch is atomic; the
reset as a whole is not: a failure part way leaves the batches before it committed, and
the error says how many partitions were reset (running the command again finishes it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from headwater.groups import GroupError
from headwater.store import HeadwaterError

T = TypeVar("T")

#: Partitions per commit of an offset reset.
RESET_BATCH = 250

ResetProgress = Callable[[int, int], None]
"""Hears ``(partitions committed, partitions to commit)``: once before the first commit,
then after each."""


async def commit_in_batches(
    offsets: Sequence[T],
    commit: Callable[[Sequence[T]], Awaitable[None]],
    progress: ResetProgress | None,
) -> None:
    """Commit ``offsets`` (one per partition) :data:`RESET_BATCH` at a time.

    :raises HeadwaterError: what a commit raised; if batches were committed before it,
        a :class:`~headwater.groups.GroupError` that says how many partitions they held.
    """
    total = len(offsets)
    if progress is not None:
        progress(0, total)
    for start in range(0, total, RESET_BATCH):
        batch = offsets[start : start + RESET_BATCH]
        try:
            await commit(batch)
        except HeadwaterError as exc:
            if not start:
                raise
            raise GroupError(
                f"{exc} (the offsets of {start} of the {total} partitions were reset before "
                "this: run the command again to reset them all)"
            ) from exc
        if progress is not None:
            progress(start + len(batch), total)
