"""The consumer-group subtree of headwater's exception tree.

Every class carries the Kafka error code a broker answers with (``code``), so the wire
layer translates an exception into a response without a lookup table of its own::

    HeadwaterError                       (headwater.store)
    └── GroupError                       -1  UNKNOWN_SERVER_ERROR (never raised itself)
        ├── OffsetMetadataTooLargeError     12  a commit's metadata string is too long
        ├── CoordinatorLoadInProgressError  14  committed offsets are still loading
        ├── CoordinatorNotAvailableError    15  the group is Dead (deleted or unloaded)
        ├── NotCoordinatorError             16  the group was unloaded from this coordinator
        ├── InconsistentGroupProtocolError  23  protocol type or protocols do not match the group
        ├── InvalidProtocolMetadataError    23  ConsumerProtocol bytes that do not decode
        ├── InvalidGroupIdError             24  an empty group id
        ├── InvalidSessionTimeoutError      26  outside the coordinator's allowed range
        ├── RebalanceInProgressError        27  rejoin: the group is rebalancing
        ├── InvalidGroupConfigError         40  a GroupConfig value a user can correct
        ├── GroupNotEmptyError              68  deleting a group that still has members
        ├── GroupIdNotFoundError            69  deleting a group that does not exist
        ├── MemberIdRequiredError           79  first join: rejoin with ``member_id``
        ├── GroupMaxSizeReachedError        81
        ├── GroupSubscribedToTopicError     86  deleting offsets of a topic the members consume
        ├── PartitionNotAssignedError       -1  (client side) a partition the consumer does not own
        └── FencedMemberError                   the caller is not a member of this generation
            ├── IllegalGenerationError      22  a stale generation id
            ├── UnknownMemberError          25  a member id the group does not know (expired, left)
            └── FencedInstanceIdError       82  a newer member took over this group instance id

Catch :class:`FencedMemberError` to handle "I am no longer a valid member" in one place: a
consumer that gets it must stop treating its partitions as owned and rejoin (or, for
``FencedInstanceIdError``, stop: another process runs with its instance id).
"""

from __future__ import annotations

from headwater.store import HeadwaterError


class GroupError(HeadwaterError):
    """An operating error of a consumer group; ``code`` is the Kafka error code to answer."""

    code: int = -1


class OffsetMetadataTooLargeError(GroupError):
    """A committed offset's metadata string is longer than the coordinator allows."""

    code = 12


class CoordinatorLoadInProgressError(GroupError):
    """The coordinator is still loading committed offsets; retry shortly."""

    code = 14


class CoordinatorNotAvailableError(GroupError):
    """The group is Dead (deleted, or its state moved away); the client looks it up again."""

    code = 15


class NotCoordinatorError(GroupError):
    """This coordinator no longer hosts the group (it was unloaded)."""

    code = 16


class InconsistentGroupProtocolError(GroupError):
    """The member's protocol type differs from the group's, or it shares no protocol with it."""

    code = 23


class InvalidProtocolMetadataError(GroupError):
    """Bytes that should hold a ConsumerProtocol subscription or assignment do not decode.

    Kafka has no dedicated code for this; 23 (INCONSISTENT_GROUP_PROTOCOL) is the closest
    answer a broker can give about metadata it cannot use.
    """

    code = 23


class InvalidGroupIdError(GroupError):
    """The group id is empty."""

    code = 24


class InvalidSessionTimeoutError(GroupError):
    """The session timeout is outside the coordinator's configured range."""

    code = 26


class RebalanceInProgressError(GroupError):
    """The group is rebalancing; the member rejoins to take part."""

    code = 27


class InvalidGroupConfigError(GroupError):
    """A :class:`GroupConfig` value that is not valid; the message says which and why."""

    code = 40


class GroupNotEmptyError(GroupError):
    """The group still has members, so it cannot be deleted."""

    code = 68


class GroupIdNotFoundError(GroupError):
    """The group does not exist (it is Dead)."""

    code = 69


class MemberIdRequiredError(GroupError):
    """A first JoinGroup (v4+) without a member id: rejoin with :attr:`member_id`.

    The coordinator has already reserved ``member_id`` as a pending member; it expires
    if the client does not rejoin with it within its session timeout.
    """

    code = 79

    def __init__(self, member_id: str) -> None:
        super().__init__(f"rejoin with the generated member id {member_id!r}")
        self.member_id = member_id


class GroupMaxSizeReachedError(GroupError):
    """The group already has as many members as the coordinator allows."""

    code = 81


class GroupSubscribedToTopicError(GroupError):
    """Deleting committed offsets of a topic that the group's active members subscribe to."""

    code = 86


class PartitionNotAssignedError(GroupError):
    """A consumer was asked to seek, pause, resume or report a partition it is not assigned.

    Client-side only (no wire code): the partition may have been revoked by a rebalance.
    """


class FencedMemberError(GroupError):
    """The caller is not (or no longer) a member of the group's current generation.

    Not raised itself; see the subclasses.
    """


class IllegalGenerationError(FencedMemberError):
    """The request names a generation that is not the group's current one."""

    code = 22


class UnknownMemberError(FencedMemberError):
    """The group has no member with that id (it left, expired, or never joined)."""

    code = 25


class FencedInstanceIdError(FencedMemberError):
    """Another member id now holds this ``group_instance_id``; the old one is fenced."""

    code = 82
