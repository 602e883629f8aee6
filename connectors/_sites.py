"""Where a connector works: a log, the positions of its sources, its consumer groups.

A :class:`ConnectorSite` holds the three for one log, so that every host of a connector
(the ``headwater connect`` command, an app) builds it the same way:

- :func:`store_site`: a data directory's store in this process (:class:`StoreLog`,
  :class:`LogPositionStore`, and its :class:`~headwater.groups.GroupCoordinator` for
  sinks);
- :func:`cluster_site`: a Kafka-protocol cluster, ``headwater broker`` or Kafka
  (:class:`KafkaLog`, :class:`KafkaPositionStore`, :class:`KafkaGroups`);
- :func:`app_site`: the log an app runs on: its embedded log, or the cluster of its
  Kafka backend (the app's client settings carried over).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from headwater.groups import GroupCoordinator
from headwater.processing import Backend
from headwater.store import Store

from ._errors import ConnectorError
from ._kafka_groups import KafkaGroups
from ._kafka_log import KafkaCluster, KafkaLog, KafkaPositionStore
from ._log import ConnectorLog, StoreLog
from ._position import LogPositionStore, PositionStore
from ._sink_runner import SinkGroups

#: Settings of an app's clients that a connector's clients set for themselves.
_OWN_SETTINGS = frozenset({"bootstrap.servers", "client.id", "logger", "error_cb"})


@dataclass(frozen=True, slots=True)
class ConnectorSite:
    """A log as connectors use it (see the module).

    :param log: where records are appended (sources, dead letters).
    :param positions: where sources keep their positions.
    :param groups: where sinks find their consumer groups (None where not opened).
    :param description: the log, for messages (``data directory D``, ``the broker at A``).
    """

    log: ConnectorLog
    positions: PositionStore
    groups: SinkGroups | None
    description: str


@contextlib.asynccontextmanager
async def store_site(
    store: Store, coordinator: GroupCoordinator | None = None, *, description: str = "the store"
) -> AsyncIterator[ConnectorSite]:
    """The site of ``store`` (with ``coordinator``'s groups, when given) for a block."""
    yield ConnectorSite(StoreLog(store), LogPositionStore(store), coordinator, description)


@contextlib.asynccontextmanager
async def cluster_site(
    bootstrap: str, settings: Mapping[str, Any] | None = None
) -> AsyncIterator[ConnectorSite]:
    """The site of the cluster at ``bootstrap`` (librdkafka ``settings`` for every client)
    for a block; leaving it flushes what is being appended and closes the clients.

    :raises ConnectorConfigError: for a malformed ``bootstrap``.
    """
    cluster = KafkaCluster(bootstrap, settings)
    async with KafkaLog(cluster) as log:
        yield ConnectorSite(log, KafkaPositionStore(log), KafkaGroups(cluster), cluster.description)


@contextlib.asynccontextmanager
async def app_site(backend: Backend) -> AsyncIterator[ConnectorSite]:
    """The site of the log an app runs on (see the module) for a block.

    :raises ConnectorError: if the app runs on neither (the test driver's log).
    """
    store = getattr(backend, "store", None)
    coordinator = getattr(backend, "coordinator", None)
    if isinstance(store, Store) and isinstance(coordinator, GroupCoordinator):
        async with store_site(store, coordinator) as site:
            yield site
        return
    bootstrap = getattr(backend, "bootstrap", None)
    client_config = getattr(backend, "client_config", None)
    if isinstance(bootstrap, str) and callable(client_config):
        settings = {k: v for k, v in client_config().items() if k not in _OWN_SETTINGS}
        async with cluster_site(bootstrap, settings) as site:
            yield site
        return
    raise ConnectorError(
        "connectors run in an app on its embedded log (a data directory) or on a "
        f"Kafka-protocol cluster; this app runs on {type(backend).__name__}"
    )
