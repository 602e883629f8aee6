"""Consumer settings (Kafka's consumer configs, in snake_case, with its defaults)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from headwater.store import IsolationLevel

from ._assignors import ASSIGNORS
from ._errors import InvalidGroupConfigError

_RESETS = ("earliest", "latest")
_POSITIVE = (
    "auto_commit_interval_ms",
    "session_timeout_ms",
    "heartbeat_interval_ms",
    "rebalance_timeout_ms",
    "max_bytes",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class ConsumerConfig:
    """How an embedded :class:`~headwater.groups.Consumer` takes part in its group.

    :param auto_offset_reset: where a partition without a committed offset (or with one
        below the log start, removed by retention) starts: ``"earliest"`` or ``"latest"``.
    :param enable_auto_commit: commit delivered positions every ``auto_commit_interval_ms``
        (checked when the application asks for the next batch) and on a clean close.
    :param auto_commit_interval_ms: the auto-commit period.
    :param partition_assignment_strategy: the assignor (``"cooperative-sticky"``,
        ``"range"``, ``"roundrobin"``), or several in order of preference. The consumer
        rebalances cooperatively (revoking only partitions that move) when every one it
        names is cooperative, eagerly (revoking everything first) otherwise.
    :param session_timeout_ms: how long the coordinator waits for a heartbeat before it
        removes the member; within the coordinator's allowed range.
    :param heartbeat_interval_ms: the heartbeat period; below the session timeout.
    :param rebalance_timeout_ms: how long a rebalance waits for this member to rejoin
        (Kafka's max.poll.interval.ms): the longest an application may hold one batch
        while the group rebalances.
    :param max_bytes: the most bytes one batch reads from a partition (a first record
        batch larger than this still comes whole).
    :param client_id: the client id members are named after.
    :param group_instance_id: a static membership id, or None for a dynamic member.
    :param isolation_level: which records of transactions are delivered (Kafka's
        ``isolation.level``): ``READ_UNCOMMITTED`` all of them, ``READ_COMMITTED`` only
        committed ones, up to the last stable offset. Markers never are.
    :raises InvalidGroupConfigError: for a value out of range or an unknown assignor.
    """

    auto_offset_reset: str = "latest"
    enable_auto_commit: bool = False
    auto_commit_interval_ms: int = 5_000
    partition_assignment_strategy: str | tuple[str, ...] = "cooperative-sticky"
    session_timeout_ms: int = 45_000
    heartbeat_interval_ms: int = 3_000
    rebalance_timeout_ms: int = 300_000
    max_bytes: int = 1 << 20
    client_id: str = "headwater"
    group_instance_id: str | None = None
    isolation_level: IsolationLevel = IsolationLevel.READ_UNCOMMITTED

    def __post_init__(self) -> None:
        if not isinstance(self.isolation_level, IsolationLevel):
            raise InvalidGroupConfigError(
                f"isolation_level must be an IsolationLevel, got {self.isolation_level!r}"
            )
        if self.auto_offset_reset not in _RESETS:
            raise InvalidGroupConfigError(
                f"auto_offset_reset must be 'earliest' or 'latest', got {self.auto_offset_reset!r}"
            )
        for name in _POSITIVE:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidGroupConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise InvalidGroupConfigError(
                f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be below "
                f"session_timeout_ms ({self.session_timeout_ms})"
            )
        strategy = self.partition_assignment_strategy
        strategies = (strategy,) if isinstance(strategy, str) else tuple(strategy)
        unknown = [name for name in strategies if name not in ASSIGNORS]
        if not strategies or unknown:
            raise InvalidGroupConfigError(
                f"unknown partition_assignment_strategy {unknown or strategies!r}; "
                f"known: {', '.join(ASSIGNORS)}"
            )
        # Frozen: store the normalised tuple with object.__setattr__.
        object.__setattr__(self, "partition_assignment_strategy", strategies)
        if self.group_instance_id is not None and not self.group_instance_id:
            raise InvalidGroupConfigError("group_instance_id must be None or non-empty")

    @classmethod
    def from_options(cls, base: ConsumerConfig | None, options: dict[str, Any]) -> ConsumerConfig:
        """Return ``base`` (or the defaults) with ``options`` replacing fields by name.

        :raises InvalidGroupConfigError: for an option that is not a field, or a bad value.
        """
        names = {field.name for field in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            known = ", ".join(sorted(names))
            raise InvalidGroupConfigError(
                f"unknown consumer option(s) {', '.join(unknown)}; known: {known}"
            )
        current = {name: getattr(base, name) for name in names} if base is not None else {}
        return cls(**(current | options))

    @property
    def strategies(self) -> tuple[str, ...]:
        """The assignors in order of preference."""
        strategy = self.partition_assignment_strategy
        return (strategy,) if isinstance(strategy, str) else strategy

    @property
    def cooperative(self) -> bool:
        """Whether rebalances are cooperative (every assignor named is cooperative)."""
        return all(name == "cooperative-sticky" for name in self.strategies)
