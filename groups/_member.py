"""A group's members, as the coordinator tracks them.

Theory of operation
-------------------
A :class:`Member` is what its latest JoinGroup said (client, timeouts, protocols in order
of preference), plus the coordinator's bookkeeping: its assignment in the current
generation, the JoinGroup or SyncGroup it has waiting (at most one of each), whether it is
new (added in the rebalance under way), and when its session was last refreshed.

When a member expires follows Kafka's rules: a member waiting in JoinGroup or SyncGroup
cannot heartbeat, so its session does not run out while it waits (the rebalance timeout
bounds the wait instead); only a *new* member waiting in JoinGroup expires, after the
coordinator's new-member join timeout, so clients that gave up on a long rebalance do not
pile up. Otherwise a member expires ``session_timeout_ms`` after its last heartbeat (or
other refresh: a completed join or sync, an offset commit).

The :class:`Roster` holds who is in the group: members in join order (the order breaks
ties, so the group's choices never depend on hashing), which member holds each static
``group_instance_id``, the member ids handed out with MEMBER_ID_REQUIRED that have not
joined yet, the leader, and the protocol type. Its invariant: some protocol is supported
by every member, because a member joins (or changes its protocols) only if it shares one
with all the others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Set

from ._errors import FencedInstanceIdError, InconsistentGroupProtocolError, UnknownMemberError
from ._messages import JoinedMember, JoinRequest, Pending


class Member:
    """The coordinator's mutable record of one member. Owned by one group."""

    __slots__ = (
        "assignment",
        "heartbeat_ms",
        "is_new",
        "join_pending",
        "member_id",
        "protocols",
        "request",
        "sync_pending",
    )

    def __init__(self, member_id: str, request: JoinRequest, now_ms: int) -> None:
        self.member_id = member_id
        self.request = request
        self.protocols: dict[str, bytes] = _first_of_each(request)
        self.assignment = b""
        self.join_pending: Pending | None = None
        self.sync_pending: Pending | None = None
        self.is_new = True
        self.heartbeat_ms = now_ms

    @property
    def group_instance_id(self) -> str | None:
        """The static membership id, or None for a dynamic member."""
        return self.request.group_instance_id

    @property
    def rebalance_timeout_ms(self) -> int:
        """The rebalance timeout; JoinGroup v0 has none and uses the session timeout."""
        timeout = self.request.rebalance_timeout_ms
        return timeout if timeout >= 0 else self.request.session_timeout_ms

    def matches(self, request: JoinRequest) -> bool:
        """Whether ``request`` carries the same protocols and metadata, in the same order."""
        return list(_first_of_each(request).items()) == list(self.protocols.items())

    def vote(self, candidates: Set[str]) -> str:
        """The member's most preferred protocol among ``candidates``."""
        return next(name for name in self.protocols if name in candidates)

    def metadata_for(self, protocol_name: str | None) -> bytes:
        """This member's metadata for ``protocol_name`` (empty if it has none)."""
        return b"" if protocol_name is None else self.protocols.get(protocol_name, b"")

    def expiry_ms(self, new_member_join_timeout_ms: int) -> int | None:
        """When the coordinator removes this member unless refreshed; None while it waits."""
        if self.join_pending is not None:
            return self.heartbeat_ms + new_member_join_timeout_ms if self.is_new else None
        if self.sync_pending is not None:
            return None
        return self.heartbeat_ms + self.request.session_timeout_ms


class Roster:
    """Who is in one group. Answers and waiting requests are the coordinator's business."""

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.members: dict[str, Member] = {}
        self.static_members: dict[str, str] = {}  # group_instance_id -> member_id
        self.pending_members: dict[str, int] = {}  # member_id -> expiry (MEMBER_ID_REQUIRED)
        self.leader_id: str | None = None
        self.protocol_type: str | None = None

    def add(self, member: Member) -> None:
        """Add a member; the first one in an empty group leads and sets the protocol type."""
        self.pending_members.pop(member.member_id, None)
        if not self.members:
            self.protocol_type = member.request.protocol_type
        self.members[member.member_id] = member
        if self.leader_id is None:
            self.leader_id = member.member_id
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member.member_id

    def update(self, member: Member, request: JoinRequest) -> None:
        """Take the client, timeouts and protocols of the member's newer JoinGroup."""
        member.request = request
        member.protocols = _first_of_each(request)
        if len(self.members) == 1:
            self.protocol_type = request.protocol_type

    def remove(self, member: Member) -> None:
        """Remove a member; if it led, the first remaining member leads."""
        del self.members[member.member_id]
        instance_id = member.group_instance_id
        if instance_id is not None and self.static_members.get(instance_id) == member.member_id:
            del self.static_members[instance_id]
        if self.leader_id == member.member_id:
            self.leader_id = next(iter(self.members), None)

    def rename(self, member: Member, member_id: str) -> None:
        """Give a static member a new member id, keeping its place, leadership and instance."""
        old_member_id, member.member_id = member.member_id, member_id
        self.members = {
            (member_id if key == old_member_id else key): value
            for key, value in self.members.items()
        }
        assert member.group_instance_id is not None, "only static members are renamed"
        self.static_members[member.group_instance_id] = member_id
        if self.leader_id == old_member_id:
            self.leader_id = member_id

    def static_member(self, group_instance_id: str | None) -> Member | None:
        """The member holding ``group_instance_id``, if any."""
        if group_instance_id is None or group_instance_id not in self.static_members:
            return None
        return self.members[self.static_members[group_instance_id]]

    def current(self, member_id: str, group_instance_id: str | None) -> Member:
        """The member a request names, checked as Kafka's validateCurrentMember does.

        :raises UnknownMemberError: if no member has that id (or that instance id).
        :raises FencedInstanceIdError: if the instance id belongs to another member id.
        """
        if group_instance_id is not None:
            holder = self.static_members.get(group_instance_id)
            if holder is None:
                raise UnknownMemberError(f"no member has instance id {group_instance_id!r}")
            if holder != member_id:
                raise FencedInstanceIdError(
                    f"instance {group_instance_id!r} is now member {holder!r}, not {member_id!r}"
                )
        member = self.members.get(member_id)
        if member is None:
            raise UnknownMemberError(f"{member_id!r} is not a member of {self.group_id!r}")
        return member

    def check_protocols(self, request: JoinRequest, *, replacing: str | None) -> None:
        """Check that ``request`` can join the others (all members but ``replacing``).

        :raises InconsistentGroupProtocolError: if it names no protocol type or protocols,
            another protocol type, or no protocol that every other member supports.
        """
        others = [m for member_id, m in self.members.items() if member_id != replacing]
        names = {protocol.name for protocol in request.protocols}
        if not others:
            if request.protocol_type and names:
                return
            raise InconsistentGroupProtocolError("a join needs a protocol type and protocols")
        if request.protocol_type != self.protocol_type:
            raise InconsistentGroupProtocolError(
                f"protocol type {request.protocol_type!r} is not the group's {self.protocol_type!r}"
            )
        if not names & (_common_protocols(others) or set()):
            raise InconsistentGroupProtocolError(
                f"none of {sorted(names)} is supported by every member of {self.group_id!r}"
            )

    def select_protocol(self) -> str:
        """The protocol the members vote for; a tie goes to the first voted for."""
        candidates = _common_protocols(self.members.values())
        assert candidates, "every join keeps a protocol common to all members"
        votes = Counter(member.vote(candidates) for member in self.members.values())
        return votes.most_common(1)[0][0]

    def rebalance_timeout_ms(self) -> int:
        """The largest rebalance timeout of the members (0 with no members)."""
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def all_joined(self) -> bool:
        """Whether every member waits in JoinGroup and no MEMBER_ID_REQUIRED id is out."""
        return not self.pending_members and all(
            m.join_pending is not None for m in self.members.values()
        )

    def elect_joined_leader(self) -> bool:
        """Keep the leader if it joined, else pick the first member that did; False if none."""
        leader = None if self.leader_id is None else self.members.get(self.leader_id)
        if leader is not None and leader.join_pending is not None:
            return True
        for member in self.members.values():
            if member.join_pending is not None:
                self.leader_id = member.member_id
                return True
        return False

    def joined_members(self, protocol_name: str | None) -> tuple[JoinedMember, ...]:
        """Every member with its metadata for ``protocol_name``: what the leader receives."""
        return tuple(
            JoinedMember(m.member_id, m.group_instance_id, m.metadata_for(protocol_name))
            for m in self.members.values()
        )


def _common_protocols(members: Iterable[Member]) -> set[str] | None:
    common: set[str] | None = None
    for member in members:
        names = set(member.protocols)
        common = names if common is None else common & names
    return common


def _first_of_each(request: JoinRequest) -> dict[str, bytes]:
    protocols: dict[str, bytes] = {}
    for name, metadata in request.protocols:
        protocols.setdefault(name, metadata)
    return protocols
