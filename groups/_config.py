"""Coordinator settings for consumer groups (Kafka's ``group.*`` broker configs)."""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import InvalidGroupConfigError


@dataclass(frozen=True, kw_only=True, slots=True)
class GroupConfig:
    """Coordinator settings for a group.

    :param initial_rebalance_delay_ms: how long an Empty group waits for more members
        before its first rebalance completes (Kafka: 3000; small here).
    :param min_session_timeout_ms: the smallest session timeout a member may ask for.
    :param max_session_timeout_ms: the largest session timeout a member may ask for.
    :param new_member_join_timeout_ms: how long a new member may wait in JoinGroup.
    :param max_size: the most members the group takes, or None for no limit.
    :param offsets_retention_ms: how long the committed offsets of a group that stays
        Empty are kept (Kafka's offsets.retention.minutes: 7 days); counted from when the
        group became Empty, or from the commit when that is later.
    :param offset_metadata_max_bytes: the longest metadata string a commit may carry
        (Kafka's offset.metadata.max.bytes).
    :raises InvalidGroupConfigError: if a value is negative, the session bounds are
        reversed, or ``max_size`` is below one.
    """

    initial_rebalance_delay_ms: int = 100
    min_session_timeout_ms: int = 6_000
    max_session_timeout_ms: int = 1_800_000
    new_member_join_timeout_ms: int = 300_000
    max_size: int | None = None
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000
    offset_metadata_max_bytes: int = 4096

    def __post_init__(self) -> None:
        for name in (
            "initial_rebalance_delay_ms",
            "min_session_timeout_ms",
            "max_session_timeout_ms",
            "new_member_join_timeout_ms",
            "offsets_retention_ms",
            "offset_metadata_max_bytes",
        ):
            if getattr(self, name) < 0:
                raise InvalidGroupConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.min_session_timeout_ms > self.max_session_timeout_ms:
            raise InvalidGroupConfigError(
                f"min_session_timeout_ms ({self.min_session_timeout_ms}) exceeds "
                f"max_session_timeout_ms ({self.max_session_timeout_ms})"
            )
        if self.max_size is not None and self.max_size < 1:
            raise InvalidGroupConfigError(f"max_size must be >= 1, got {self.max_size}")
