"""Retries with backoff for async operators, through tenacity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from ._errors import TopologyError

R = TypeVar("R")


@dataclass(frozen=True, kw_only=True, slots=True)
class Retry:
    """How an async operator retries a call that raised, before its error policy applies.

    Waits grow exponentially from ``backoff_s`` up to ``max_backoff_s``, each with up to
    ``jitter_s`` of random jitter (tenacity's ``wait_exponential`` + ``wait_random``); the waits use
    the event loop's clock, so a test's fake clock skips them.

    :param attempts: calls in all, the first included (1: no retry).
    :param backoff_s: the first wait. :param max_backoff_s: the longest wait.
    :param jitter_s: the most random time added to a wait.
    :param on: the exception types that are retried; others fail at once.
    :raises TopologyError: if a value is out of range.
    """

    attempts: int = 3
    backoff_s: float = 0.1
    max_backoff_s: float = 10.0
    jitter_s: float = 0.1
    on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise TopologyError(f"Retry.attempts must be an integer, got {self.attempts!r}")
        if self.attempts < 1:
            raise TopologyError(f"Retry.attempts must be at least 1, got {self.attempts}")
        for name in ("backoff_s", "max_backoff_s", "jitter_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise TopologyError(f"Retry.{name} must be a number >= 0, got {value!r}")
        if not self.on or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.on
        ):
            raise TopologyError(f"Retry.on must be exception types, got {self.on!r}")

    async def call(self, fn: Callable[[Any], Awaitable[R]], value: Any) -> R:
        """Await ``fn(value)``, retrying as configured; re-raise the last error."""
        retrying = AsyncRetrying(
            sleep=anyio.sleep,
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s)
            + wait_random(0, self.jitter_s),
            retry=retry_if_exception_type(self.on),
            reraise=True,
        )
        return await retrying(fn, value)
