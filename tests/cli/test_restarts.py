"""The supervisor's restart policy, as pure logic: backoff with full jitter, the bound on
restarts within a window, a fresh backoff after a stable run."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.cli._restarts import GiveUp, Restart, RestartPolicy, WorkerRestarts


def test_gives_up_on_the_failure_after_the_allowed_restarts() -> None:
    restarts = WorkerRestarts(RestartPolicy(max_restarts=3, window_s=60))
    decisions = [restarts.failed(started_at=t, now=t + 1.0) for t in (0.0, 2.0, 4.0, 6.0)]
    assert [type(d) for d in decisions] == [Restart, Restart, Restart, GiveUp]
    assert [d.count for d in decisions[:3] if isinstance(d, Restart)] == [1, 2, 3]
    assert decisions[3] == GiveUp(failures=4, window_s=60)


def test_no_restarts_allowed_gives_up_at_once() -> None:
    restarts = WorkerRestarts(RestartPolicy(max_restarts=0))
    assert restarts.failed(started_at=0.0, now=1.0) == GiveUp(failures=1, window_s=60.0)


def test_restarts_older_than_the_window_no_longer_count() -> None:
    restarts = WorkerRestarts(RestartPolicy(max_restarts=2, window_s=10))
    assert isinstance(restarts.failed(started_at=0.0, now=1.0), Restart)
    assert isinstance(restarts.failed(started_at=1.5, now=2.0), Restart)
    assert isinstance(restarts.failed(started_at=2.5, now=3.0), GiveUp)
    # 11.5 s: the restart at 1.0 has left the window, the one at 2.0 has not.
    decision = restarts.failed(started_at=11.0, now=11.5)
    assert isinstance(decision, Restart) and decision.count == 2


def test_the_backoff_grows_with_failures_in_a_row_and_starts_afresh_after_a_stable_run() -> None:
    policy = RestartPolicy(max_restarts=100, window_s=1e9, backoff_s=1.0, backoff_max_s=5.0,
                           stable_s=30.0)  # fmt: skip
    restarts = WorkerRestarts(policy)
    ceilings = []
    now = 0.0
    for _ in range(40):  # quick failures: the n-th waits at most min(2**(n-1), 5) s
        decision = restarts.failed(started_at=now, now=now + 1.0)
        assert isinstance(decision, Restart)
        ceilings.append(decision.delay_s)
        now += 2.0
    assert max(ceilings[:1]) <= 1.0
    assert max(ceilings[:2]) <= 2.0
    assert max(ceilings) <= 5.0
    assert max(ceilings[3:]) > 2.0  # past the third, the jitter reaches above 2 s (40 draws)
    # After a run of 30 s, the next failure is the first in a row again.
    after = WorkerRestarts(policy)
    for _ in range(5):
        after.failed(started_at=now, now=now + 1.0)
        now += 2.0
    fresh = after.failed(started_at=now, now=now + 31.0)
    assert isinstance(fresh, Restart) and fresh.delay_s <= 1.0


@given(
    failures=st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), min_size=1, max_size=30),
    max_restarts=st.integers(0, 6),
)
def test_never_more_restarts_within_a_window_than_allowed(
    failures: list[tuple[float, float]], max_restarts: int
) -> None:
    policy = RestartPolicy(max_restarts=max_restarts, window_s=10.0, backoff_max_s=3.0)
    restarts = WorkerRestarts(policy)
    now = 0.0
    granted: list[float] = []
    for ran_s, gap_s in failures:
        started = now + gap_s
        now = started + ran_s
        decision = restarts.failed(started_at=started, now=now)
        # The model: a restart is granted while fewer than max_restarts were granted in
        # the last 10 s.
        recent = [t for t in granted if t > now - 10.0]
        if len(recent) < max_restarts:
            assert isinstance(decision, Restart)
            assert 0 <= decision.delay_s <= 3.0
            assert decision.count == len(recent) + 1
            granted.append(now)
        else:
            assert decision == GiveUp(len(recent) + 1, 10.0)


@pytest.mark.parametrize(
    "settings",
    [{"max_restarts": -1}, {"window_s": 0}, {"backoff_s": -1.0}, {"backoff_max_s": 0},
     {"stable_s": 0}],
)  # fmt: skip
def test_a_bad_policy_is_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(settings))):
        RestartPolicy(**settings)  # type: ignore[arg-type]
