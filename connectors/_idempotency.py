"""Idempotency keys of the ingest endpoint: a repeated request appends once.

A client that sends ``Idempotency-Key: K`` and retries (its connection dropped, it timed
out) gets the answer of the first request that carried K to the same topic within the
window, and the records are appended once. Concurrent requests with one key are the
case that matters: the first to arrive *claims* the key and appends; the others wait for
it and answer with its offsets. A claim whose append fails is released, so a retry may
try again. A key reused with a different body is refused (422): it names another
request.

The window lives in the memory of the serving process (``window_s`` long, at most
``max_keys`` keys, the oldest forgotten first): a restart forgets it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio


@dataclass(slots=True)
class _Entry:
    digest: bytes
    created: float
    done: anyio.Event = field(default_factory=anyio.Event)
    answer: bytes | None = None  # the JSON body of the first request's 200 answer


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of :meth:`IdempotencyWindow.claim`.

    Exactly one of: ``owner`` (this request appends, then calls :meth:`complete` or
    :meth:`release`), ``answer`` (the first request's answer, to repeat), ``conflict``
    (the key came with another body).
    """

    owner: bool = False
    answer: bytes | None = None
    conflict: bool = False
    key: tuple[str, str] = ("", "")


class IdempotencyWindow:
    """Keys seen within the last ``window_s`` (see the module). One event loop.

    :param window_s: how long a key is remembered after its first use.
    :param max_keys: the most keys remembered; the oldest go first.
    :param clock: seconds on a monotonic scale (``anyio.current_time`` by default).
    """

    def __init__(
        self,
        *,
        window_s: float = 600.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    async def claim(self, topic: str, key: str, body: bytes) -> Claim:
        """Claim ``key`` for a request with ``body`` to ``topic``, or wait for its owner."""
        digest = hashlib.sha256(body).digest()
        name = (topic, key)
        while True:
            self._forget_old()
            entry = self._entries.get(name)
            if entry is None:
                self._entries[name] = _Entry(digest, self._clock())
                return Claim(owner=True, key=name)
            if entry.digest != digest:
                return Claim(conflict=True, key=name)
            if entry.answer is not None:
                return Claim(answer=entry.answer, key=name)
            await entry.done.wait()
            # Answered, or released by a failed owner: look again (maybe claim it).

    def complete(self, claim: Claim, answer: bytes) -> None:
        """The owner's append succeeded: remember ``answer`` and wake the waiters."""
        entry = self._entries.get(claim.key)
        if entry is not None:
            entry.answer = answer
            entry.done.set()

    def release(self, claim: Claim) -> None:
        """The owner's append failed: forget the key so that a retry may claim it."""
        entry = self._entries.pop(claim.key, None)
        if entry is not None:
            entry.done.set()

    def __len__(self) -> int:
        return len(self._entries)

    def _forget_old(self) -> None:
        horizon = self._clock() - self.window_s
        entries = self._entries
        while entries:
            name, oldest = next(iter(entries.items()))
            # Keys being appended are never dropped: their waiters need the answer.
            if oldest.answer is not None and (
                oldest.created < horizon or len(entries) > self.max_keys
            ):
                del entries[name]
            else:
                break
