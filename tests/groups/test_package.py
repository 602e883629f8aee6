"""The package surface: its docstring example runs, and every error carries its Kafka code."""

from __future__ import annotations

import doctest

import pytest

from headwater import groups
from headwater.groups import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    FencedInstanceIdError,
    FencedMemberError,
    GroupError,
    GroupIdNotFoundError,
    GroupMaxSizeReachedError,
    GroupNotEmptyError,
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    InvalidGroupConfigError,
    InvalidGroupIdError,
    InvalidProtocolMetadataError,
    InvalidSessionTimeoutError,
    MemberIdRequiredError,
    NotCoordinatorError,
    RebalanceInProgressError,
    UnknownMemberError,
)
from headwater.store import HeadwaterError


def test_docstring_examples_run() -> None:
    failed, attempted = doctest.testmod(groups, raise_on_error=False)
    assert attempted > 0 and failed == 0


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (GroupError, -1),
        (CoordinatorLoadInProgressError, 14),
        (CoordinatorNotAvailableError, 15),
        (NotCoordinatorError, 16),
        (IllegalGenerationError, 22),
        (InconsistentGroupProtocolError, 23),
        (InvalidProtocolMetadataError, 23),
        (InvalidGroupIdError, 24),
        (UnknownMemberError, 25),
        (InvalidSessionTimeoutError, 26),
        (RebalanceInProgressError, 27),
        (InvalidGroupConfigError, 40),
        (GroupNotEmptyError, 68),
        (GroupIdNotFoundError, 69),
        (MemberIdRequiredError, 79),
        (GroupMaxSizeReachedError, 81),
        (FencedInstanceIdError, 82),
    ],
)
def test_errors_carry_kafka_codes(error: type[GroupError], code: int) -> None:
    assert error.code == code
    assert issubclass(error, GroupError) and issubclass(error, HeadwaterError)


def test_membership_errors_share_a_parent() -> None:
    for error in (IllegalGenerationError, UnknownMemberError, FencedInstanceIdError):
        assert issubclass(error, FencedMemberError)
    assert MemberIdRequiredError("c-1").member_id == "c-1"
