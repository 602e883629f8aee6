"""When ``headwater worker``'s supervisor restarts a worker that failed, and when it gives up.

Pure logic, no processes and no clock of its own: :class:`WorkerRestarts` is told when a
worker started and when it failed (times from any monotonic clock, in seconds) and
answers :class:`Restart` after a delay, or :class:`GiveUp`.

- The delay is exponential backoff with full jitter -- a random wait between 0 and
  ``backoff_s * 2**(n - 1)`` (at most ``backoff_max_s``) before the n-th restart in a row
  -- from tenacity's ``wait_random_exponential``, so that workers that failed together do
  not restart in step. A worker that ran for ``stable_s`` before it failed starts its
  backoff afresh: it was working, this failure is news.
- The bound: at most ``max_restarts`` restarts of one worker within any ``window_s``
  (a minute by default). The failure that would need one more is answered
  :class:`GiveUp`: a worker that keeps failing is not helped by starting it again, and
  the supervisor stops everything and says so.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from tenacity import RetryCallState, Retrying, wait_random_exponential

#: Restarts of one worker allowed within a window, by default.
DEFAULT_MAX_RESTARTS = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartPolicy:
    """How a supervisor restarts failed workers.

    :param max_restarts: restarts of one worker allowed within ``window_s``; 0 gives up
        at the first failure.
    :param window_s: the window of that bound, in seconds.
    :param backoff_s: the most the first restart in a row waits (full jitter: a random
        wait from 0 to this), doubled for each further one.
    :param backoff_max_s: the most any restart waits.
    :param stable_s: a worker that ran this long before failing starts its backoff afresh.
    :raises ValueError: for a negative count or a time that is not positive.
    """

    max_restarts: int = DEFAULT_MAX_RESTARTS
    window_s: float = 60.0
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0
    stable_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be at least 0, got {self.max_restarts}")
        for name in ("window_s", "backoff_s", "backoff_max_s", "stable_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Restart:
    """Start the worker again after ``delay_s``; it is restart ``count`` within the window."""

    delay_s: float
    count: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop restarting: ``failures`` failures of the worker within ``window_s``."""

    failures: int
    window_s: float


@dataclass(slots=True)
class WorkerRestarts:
    """The restart decisions for one worker slot, as its worker fails again and again.

    Concurrency: one caller (the task that runs the slot's worker).
    """

    policy: RestartPolicy
    _restarts: deque[float] = field(default_factory=deque)
    _in_a_row: int = 0
    _wait: wait_random_exponential = field(init=False)
    _state: RetryCallState = field(init=False)

    def __post_init__(self) -> None:
        self._wait = wait_random_exponential(
            multiplier=self.policy.backoff_s, max=self.policy.backoff_max_s
        )
        # tenacity's waits read the attempt number from a call state; this one is ours.
        self._state = RetryCallState(Retrying(), None, (), {})

    def failed(self, *, started_at: float, now: float) -> Restart | GiveUp:
        """Decide what follows a failure at ``now`` of a worker started at ``started_at``."""
        window_start = now - self.policy.window_s
        while self._restarts and self._restarts[0] <= window_start:
            self._restarts.popleft()
        if len(self._restarts) >= self.policy.max_restarts:
            return GiveUp(len(self._restarts) + 1, self.policy.window_s)
        if now - started_at >= self.policy.stable_s:
            self._in_a_row = 0
        self._in_a_row += 1
        self._state.attempt_number = self._in_a_row
        self._restarts.append(now)
        return Restart(self._wait(self._state), len(self._restarts))
