"""The values that go into a :class:`~headwater.groups.Group` and come out of it.

They mirror Kafka's JoinGroup, SyncGroup and DescribeGroups/ListGroups fields (named in
snake_case), minus what belongs to the wire (throttle times, correlation ids, versions):
the broker builds them from requests and turns them back into responses; the embedded
consumer builds them directly. Errors are not fields here: an immediate error is raised as
a :class:`~headwater.groups.GroupError` (its ``code`` is the Kafka error code), and a
deferred one arrives as the ``outcome`` of a :class:`Completion`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, NamedTuple

from ._errors import GroupError


class GroupProtocol(NamedTuple):
    """One protocol a member supports (for consumers: an assignor) and its metadata."""

    name: str
    metadata: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class JoinRequest:
    """A JoinGroup request.

    ``protocols`` are in the member's order of preference (a repeated name counts once,
    at its first place). ``member_id`` is empty on a first join. ``rebalance_timeout_ms``
    below zero (JoinGroup v0) means "the session timeout". ``require_known_member_id`` is
    JoinGroup v4+ behaviour: a first join of a dynamic member is answered with
    :class:`~headwater.groups.MemberIdRequiredError`; older versions are added at once.
    """

    client_id: str
    session_timeout_ms: int
    protocol_type: str
    protocols: tuple[GroupProtocol, ...]
    member_id: str = ""
    group_instance_id: str | None = None
    rebalance_timeout_ms: int = -1
    client_host: str = ""
    require_known_member_id: bool = True


@dataclass(frozen=True, kw_only=True, slots=True)
class SyncRequest:
    """A SyncGroup request: the leader's carries one assignment per member id.

    ``protocol_type`` and ``protocol_name`` (SyncGroup v5+) are checked against the
    group's when given.
    """

    member_id: str
    generation_id: int
    assignments: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}))
    group_instance_id: str | None = None
    protocol_type: str | None = None
    protocol_name: str | None = None


class JoinedMember(NamedTuple):
    """A member as the leader sees it: its metadata for the selected protocol."""

    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class JoinResult:
    """A successful JoinGroup response.

    ``members`` is filled only for the leader (``member_id == leader_id``), which must
    compute every member's assignment and send it with its :class:`SyncRequest`.
    """

    member_id: str
    generation_id: int
    protocol_type: str | None
    protocol_name: str | None
    leader_id: str
    members: tuple[JoinedMember, ...] = ()

    @property
    def is_leader(self) -> bool:
        """Whether this member leads the generation and must send the assignment."""
        return self.member_id == self.leader_id


@dataclass(frozen=True, kw_only=True, slots=True)
class SyncResult:
    """A successful SyncGroup response: this member's assignment bytes (maybe empty)."""

    assignment: bytes
    protocol_type: str | None
    protocol_name: str | None


@dataclass(frozen=True, eq=False, slots=True)
class Pending:
    """A JoinGroup or SyncGroup that waits for the rebalance; compare by identity.

    Exactly one :class:`Completion` for it comes out of :meth:`Group.poll
    <headwater.groups.Group.poll>` later: every pending request is answered, with a
    result or an error, and never twice.
    """

    member_id: str
    request: Literal["join", "sync"]


class Completion(NamedTuple):
    """The answer to a :class:`Pending` request, ready to deliver."""

    pending: Pending
    outcome: JoinResult | SyncResult | GroupError


@dataclass(frozen=True, kw_only=True, slots=True)
class MemberDescription:
    """A member as DescribeGroups shows it; metadata and assignment only when Stable."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class GroupDescription:
    """DescribeGroups' view of a group, plus the generation and leader for tools.

    ``protocol_name`` is empty unless the group is Stable, as in Kafka.
    """

    group_id: str
    state: str
    protocol_type: str
    protocol_name: str
    generation_id: int
    leader_id: str | None
    members: tuple[MemberDescription, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class GroupOverview:
    """ListGroups' view of a group."""

    group_id: str
    protocol_type: str
    state: str
