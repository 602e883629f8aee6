"""Random interleavings of clients against one Group, checked against the protocol's promises.

Simulated clients follow Kafka's consumer rules (rejoin when told, eager clients revoke
everything before joining, cooperative clients revoke what their new assignment lacks and
rejoin). Hypothesis picks the order of joins, leaves, crashes, static restarts,
heartbeats, deliveries and clock jumps. Throughout, and at every Stable generation:

- no partition is assigned to two members, nor owned by two clients that are in the
  current generation;
- eager assignors cover every partition;
- cooperative-sticky never hands a partition straight from one member to another, and a
  member keeps its owned partitions up to its fair share;
- once crashes stop and time passes, the group settles: Stable, every live client a
  member, every partition owned by exactly one of them.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field, replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from headwater.groups import (
    FencedInstanceIdError,
    Group,
    GroupConfig,
    GroupError,
    GroupProtocol,
    GroupState,
    IllegalGenerationError,
    JoinRequest,
    JoinResult,
    MemberIdRequiredError,
    Pending,
    RebalanceInProgressError,
    Subscription,
    SyncRequest,
    SyncResult,
    TopicPartition,
    UnknownMemberError,
    assign_partitions,
    decode_assignment,
    decode_subscription,
    encode_subscription,
)

TOPICS = {"t": 5, "u": 2}
EVERY_PARTITION = {TopicPartition(t, p) for t, n in TOPICS.items() for p in range(n)}
SESSION = 3_000
REBALANCE = 5_000
MAX_CLIENTS = 5


@dataclass(eq=False)
class Client:
    name: str
    instance: str | None
    member_id: str = ""
    generation: int = -1
    join_generation: int = -1
    owned: set[TopicPartition] = field(default_factory=set)
    pending: Pending | None = None
    inbox: list[JoinResult | SyncResult | GroupError] = field(default_factory=list)
    needs_join: bool = True
    synced: bool = False
    slow: bool = False  # a slow client waits for a `step` to act on each answer
    crashed: bool = False
    gone: bool = False

    @property
    def alive(self) -> bool:
        return not (self.crashed or self.gone)


class GroupMachine(RuleBasedStateMachine):
    protocol = "range"
    cooperative = False

    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        counter = itertools.count(1)
        self.group = Group(
            "g",
            clock=lambda: self.now,
            config=GroupConfig(initial_rebalance_delay_ms=50, min_session_timeout_ms=1),
            new_member_id=lambda client_id: f"{client_id}-{next(counter)}",
        )
        self.clients: list[Client] = []
        self.names = itertools.count(1)
        self.checked_generation = 0

    # -- client behaviour ----------------------------------------------------------------

    def join(self, client: Client) -> None:
        if not self.cooperative:
            client.owned.clear()  # eager: revoke everything before rejoining
        client.needs_join = False
        client.synced = False
        metadata = encode_subscription(
            Subscription(
                tuple(TOPICS),
                owned_partitions=tuple(sorted(client.owned)),
                generation_id=client.generation,
            )
        )
        request = JoinRequest(
            client_id=client.name,
            member_id=client.member_id,
            group_instance_id=client.instance,
            session_timeout_ms=SESSION,
            rebalance_timeout_ms=REBALANCE,
            protocol_type="consumer",
            protocols=(GroupProtocol(self.protocol, metadata),),
        )
        try:
            try:
                result = self.group.join(request)
            except MemberIdRequiredError as exc:
                client.member_id = exc.member_id
                result = self.group.join(replace(request, member_id=exc.member_id))
        except GroupError as exc:
            self.fail(client, exc)
            return
        if isinstance(result, Pending):
            client.pending = result
        else:
            self.joined(client, result)

    def joined(self, client: Client, result: JoinResult) -> None:
        client.member_id = result.member_id
        client.join_generation = result.generation_id
        assignments = {}
        if result.is_leader:
            assert result.protocol_name == self.protocol
            assignments = assign_partitions(self.protocol, result.members, TOPICS)
        try:
            synced = self.group.sync(
                SyncRequest(
                    member_id=client.member_id,
                    generation_id=result.generation_id,
                    group_instance_id=client.instance,
                    assignments=assignments,
                )
            )
        except GroupError as exc:
            self.fail(client, exc)
            return
        if isinstance(synced, Pending):
            client.pending = synced
        else:
            self.synced(client, synced)

    def synced(self, client: Client, result: SyncResult) -> None:
        assigned = set(decode_assignment(result.assignment).partitions)
        revoked = client.owned - assigned
        client.owned = assigned
        client.generation = client.join_generation
        client.synced = True
        if revoked and self.cooperative:
            client.needs_join = True  # revoke first, then let the others have them

    def fail(self, client: Client, error: GroupError) -> None:
        client.synced = False
        if isinstance(error, FencedInstanceIdError):
            client.gone = True  # another process took over this instance id
        elif isinstance(error, UnknownMemberError):
            client.member_id, client.generation = "", -1
            client.owned.clear()
        elif isinstance(error, IllegalGenerationError):
            client.generation = -1
            client.owned.clear()
        else:
            assert isinstance(error, RebalanceInProgressError), error
        client.needs_join = not client.gone

    def deliver(self) -> None:
        """Hand completions to their clients; fast ones act on them at once."""
        while completions := self.group.poll():
            for pending, outcome in completions:
                owner = next(c for c in self.clients if c.pending is pending)
                owner.pending = None
                if owner.alive:
                    owner.inbox.append(outcome)
            for client in self.live():
                while client.inbox and not client.slow:
                    self.act(client)
            self.check()

    def act(self, client: Client) -> None:
        outcome = client.inbox.pop(0)
        if isinstance(outcome, GroupError):
            self.fail(client, outcome)
        elif isinstance(outcome, JoinResult):
            self.joined(client, outcome)
        else:
            self.synced(client, outcome)
        self.rejoin_if_fast(client)

    def rejoin_if_fast(self, client: Client) -> None:
        # A real consumer rejoins on its next poll; a bound keeps a bug from spinning here.
        for _ in range(3):
            if client.slow or not client.alive or not client.needs_join or client.pending:
                return
            self.join(client)

    def step_client(self, client: Client) -> None:
        if client.inbox:
            self.act(client)
        elif client.needs_join and client.pending is None:
            self.join(client)
        elif client.synced and client.pending is None:
            try:
                self.group.heartbeat(client.member_id, client.generation, client.instance)
            except GroupError as exc:
                self.fail(client, exc)
                self.rejoin_if_fast(client)
        self.deliver()
        self.check()

    def live(self) -> list[Client]:
        return [c for c in self.clients if c.alive]

    # -- rules ---------------------------------------------------------------------------

    @precondition(lambda self: len(self.live()) < MAX_CLIENTS)
    @rule(static=st.booleans(), slow=st.booleans())
    def start(self, static: bool, slow: bool) -> None:
        name = f"c{next(self.names)}"
        client = Client(name, f"i-{name}" if static else None, slow=slow)
        self.clients.append(client)
        self.step_client(client)

    @precondition(lambda self: self.live())
    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        self.step_client(data.draw(st.sampled_from(self.live())))

    @precondition(lambda self: self.live())
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(self.live()))
        client.gone = True
        client.owned.clear()
        if client.member_id:
            with contextlib.suppress(UnknownMemberError, FencedInstanceIdError):
                self.group.leave(client.member_id, client.instance)
        self.deliver()

    @precondition(lambda self: self.live())
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        data.draw(st.sampled_from(self.live())).crashed = True

    @precondition(lambda self: any(c.crashed and c.instance for c in self.clients))
    @rule(data=st.data())
    def restart_static(self, data: st.DataObject) -> None:
        old = data.draw(st.sampled_from([c for c in self.clients if c.crashed and c.instance]))
        old.crashed, old.gone = False, True
        client = Client(old.name, old.instance)
        self.clients.append(client)
        self.step_client(client)

    @precondition(lambda self: self.live())
    @rule()
    def tick(self) -> None:
        """A little time passes and every live client takes its next step."""
        self.now += 100
        for client in self.live():
            self.step_client(client)

    @rule(ms=st.sampled_from([10, 60, 500, SESSION // 2]) | st.integers(1, 2 * SESSION))
    def advance(self, ms: int) -> None:
        self.now += ms
        self.deliver()

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def check(self) -> None:
        self.current_owners_are_exclusive()
        self.stable_generations_keep_the_promises()

    def current_owners_are_exclusive(self) -> None:
        current = [
            c
            for c in self.live()
            if c.generation == self.group.generation_id and c.member_id in self.group.member_ids
        ]
        seen: set[TopicPartition] = set()
        for client in current:
            assert not seen & client.owned, "a partition has two owners"
            seen |= client.owned

    def stable_generations_keep_the_promises(self) -> None:
        if self.group.state is not GroupState.STABLE:
            return
        description = self.group.describe()
        assignments = {
            m.member_id: set(decode_assignment(m.assignment).partitions)
            for m in description.members
        }
        assigned = [p for partitions in assignments.values() for p in partitions]
        assert len(assigned) == len(set(assigned)), "a partition is assigned twice"
        if not self.cooperative:
            assert set(assigned) == EVERY_PARTITION
        if self.checked_generation == self.group.generation_id:
            return
        self.checked_generation = self.group.generation_id
        if self.cooperative:
            claims = {m.member_id: decode_subscription(m.metadata) for m in description.members}
            check_cooperative(claims, assignments)

    def teardown(self) -> None:
        """No more crashes: live clients heartbeat and follow the protocol until settled."""
        for _ in range(100):
            for _ in range(4):
                for client in self.live():
                    self.step_client(client)
            if self.settled():
                break
            self.now += SESSION // 4
            self.deliver()
        assert self.settled(), "the group did not settle"

    def settled(self) -> bool:
        live = self.live()
        if not live:
            return True
        if self.group.state is not GroupState.STABLE:
            return False
        if set(self.group.member_ids) != {c.member_id for c in live}:
            return False
        if any(c.needs_join or c.inbox or c.pending or not c.synced for c in live):
            return False
        owned = [p for c in live for p in c.owned]
        return len(owned) == len(set(owned)) and set(owned) == EVERY_PARTITION


def check_cooperative(
    claims: dict[str, Subscription], assignments: dict[str, set[TopicPartition]]
) -> None:
    newest = max(s.generation_id for s in claims.values())
    claimed_by: dict[TopicPartition, list[str]] = {}
    for member, subscription in claims.items():
        for partition in subscription.owned_partitions:
            claimed_by.setdefault(partition, []).append(member)
    quota = len(EVERY_PARTITION) // len(claims)
    for member, partitions in assignments.items():
        for partition in partitions:
            owners = claimed_by.get(partition, [])
            assert not owners or member in owners, "handed over without being revoked first"
        subscription = claims[member]
        valid = {
            p
            for p in subscription.owned_partitions
            if subscription.generation_id == newest and claimed_by[p] == [member]
        }
        assert len(valid & partitions) >= min(len(valid), quota), "not sticky"


CHECKS = settings(max_examples=80, stateful_step_count=50, deadline=None)


@CHECKS
class EagerRange(GroupMachine):
    protocol = "range"


@CHECKS
class CooperativeSticky(GroupMachine):
    protocol = "cooperative-sticky"
    cooperative = True


TestEagerRange = EagerRange.TestCase
TestCooperativeSticky = CooperativeSticky.TestCase
