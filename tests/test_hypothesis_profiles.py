"""The hypothesis profiles of ``tests/conftest.py`` are the ones in force."""

from __future__ import annotations

from hypothesis import HealthCheck, settings


def test_no_property_test_has_a_deadline_or_a_timed_health_check() -> None:
    # A busy machine makes examples slow; that must never fail a test (see conftest.py).
    assert settings().deadline is None
    assert HealthCheck.too_slow in settings().suppress_health_check


def test_ci_replays_the_same_examples() -> None:
    ci = settings.get_profile("ci")
    assert (ci.derandomize, ci.database, ci.deadline) == (True, None, None)
