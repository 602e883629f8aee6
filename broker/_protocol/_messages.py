"""The registry of every API the broker serves, and the versions it advertises.

Theory of operation
-------------------
Each API is declared once (``_log_apis``, ``_group_apis``, ``_admin_apis``, ``_txn_apis``,
``_txn_admin_apis``) over the versions the broker advertises (NOTES.md's table), with the
fields of every version; ``_codec.py`` walks these declarations. Fields that only newer
versions carry are left out until the broker advertises those versions: extending an API
means raising ``advertised`` and adding the new fields with ``since=``.

``advertised`` is what ApiVersions lists and what the codec decodes; ``accepted`` is the
subrange the broker actually serves (Produce v0-2 carry the old message formats, Fetch
v0-3 and ListOffsets v0 predate what headwater stores): a handler answers the others with
``UNSUPPORTED_VERSION``. Advertising from version 0 matters: librdkafka turns features on
only when it sees exact old versions advertised.
"""

from __future__ import annotations

from typing import NamedTuple

from ._admin_apis import (
    ALTER_CONFIGS,
    API_VERSIONS_API,
    CREATE_PARTITIONS,
    CREATE_TOPICS,
    DELETE_RECORDS,
    DELETE_TOPICS,
    DESCRIBE_CONFIGS,
    INCREMENTAL_ALTER_CONFIGS,
    METADATA,
)
from ._codes import ApiKey
from ._group_apis import (
    DELETE_GROUPS,
    DESCRIBE_GROUPS,
    FIND_COORDINATOR,
    HEARTBEAT,
    JOIN_GROUP,
    LEAVE_GROUP,
    LIST_GROUPS,
    OFFSET_COMMIT,
    OFFSET_DELETE,
    OFFSET_FETCH,
    SYNC_GROUP,
)
from ._log_apis import FETCH, INIT_PRODUCER_ID, LIST_OFFSETS, PRODUCE
from ._schema import Api
from ._txn_admin_apis import (
    DESCRIBE_PRODUCERS,
    DESCRIBE_TRANSACTIONS,
    LIST_TRANSACTIONS,
    WRITE_TXN_MARKERS,
)
from ._txn_apis import ADD_OFFSETS_TO_TXN, ADD_PARTITIONS_TO_TXN, END_TXN, TXN_OFFSET_COMMIT

APIS: dict[int, Api] = {
    api.key: api
    for api in (
        PRODUCE, FETCH, LIST_OFFSETS, METADATA, OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR,
        JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP, DESCRIBE_GROUPS, LIST_GROUPS,
        API_VERSIONS_API, CREATE_TOPICS, DELETE_TOPICS, INIT_PRODUCER_ID, DESCRIBE_CONFIGS,
        ALTER_CONFIGS, INCREMENTAL_ALTER_CONFIGS, DELETE_GROUPS, DELETE_RECORDS,
        CREATE_PARTITIONS, OFFSET_DELETE,
        ADD_PARTITIONS_TO_TXN, ADD_OFFSETS_TO_TXN, END_TXN, TXN_OFFSET_COMMIT,
        WRITE_TXN_MARKERS, DESCRIBE_PRODUCERS, DESCRIBE_TRANSACTIONS, LIST_TRANSACTIONS,
    )
}  # fmt: skip
"""Every declared API by key."""


class ApiVersionRange(NamedTuple):
    """The versions of one API: advertised (and decodable), and actually served."""

    advertised: tuple[int, int]
    accepted: tuple[int, int]

    def is_accepted(self, version: int) -> bool:
        """Return whether the broker serves ``version`` rather than only decoding it."""
        return self.accepted[0] <= version <= self.accepted[1]


API_VERSIONS: dict[ApiKey, ApiVersionRange] = {
    ApiKey(api.key): ApiVersionRange(api.advertised, api.accepted) for api in APIS.values()
}
"""API key -> the (min, max) versions to advertise and the (min, max) versions to serve.

The broker lists only the APIs it has handlers for: clients turn features on from what is
advertised. DescribeConfigs is optional in NOTES.md.
"""
