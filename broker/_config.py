"""The broker's settings: one frozen value, validated where it is built.

A broker is one node of a one-node cluster: it names itself (``node_id``) as the leader of
every partition, the controller and the coordinator of every group, at the address it
*advertises* -- the address clients should connect to, which differs from the listening
one behind NAT or when listening on all interfaces. The advertised port defaults to the
port actually bound, so ``port=0`` (any free port) works.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from ._errors import InvalidBrokerConfigError
from ._protocol import DEFAULT_MAX_FRAME_BYTES

DEFAULT_PORT = 9092
#: Bytes asked of the socket per receive: under the allocator's mmap threshold, so a
#: receive of a few bytes does not map and unmap a large buffer.
RECEIVE_BYTES = 64 * 1024
_MIN_FRAME_BYTES = 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class BrokerConfig:
    """How a broker listens and how it describes itself to clients.

    :param host: the address to listen on (``0.0.0.0`` for every interface).
    :param port: the port to listen on; 0 picks a free one.
    :param advertised_host: the host clients are told to connect to; by default
        ``host``, or this machine's name when ``host`` is a wildcard address.
    :param advertised_port: the port clients are told; by default the port bound.
    :param node_id: this broker's node id (leader, controller and coordinator).
    :param cluster_id: the id Metadata answers with; by default one derived from the
        data directory, so it stays the same across restarts.
    :param max_frame_bytes: the largest request accepted (Kafka's
        ``socket.request.max.bytes``); a larger size closes the connection.
    :param auto_create_topics: create a topic a Metadata request names when the client
        allows it (Kafka's ``auto.create.topics.enable``), with the store's default config.
    :param shutdown_grace_s: how long a graceful shutdown waits for requests in flight.

    :raises InvalidBrokerConfigError: if a value is out of range.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    advertised_host: str | None = None
    advertised_port: int | None = None
    node_id: int = 0
    cluster_id: str | None = None
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    auto_create_topics: bool = True
    shutdown_grace_s: float = 10.0

    def __post_init__(self) -> None:
        _check_port("port", self.port, allow_zero=True)
        if self.advertised_port is not None:
            _check_port("advertised_port", self.advertised_port, allow_zero=False)
        if not 0 <= self.node_id <= 0x7FFFFFFF:
            raise InvalidBrokerConfigError(
                f"node_id must be from 0 to 2147483647, got {self.node_id}"
            )
        if not _MIN_FRAME_BYTES <= self.max_frame_bytes <= 0x7FFFFFFF:
            raise InvalidBrokerConfigError(
                f"max_frame_bytes must be from {_MIN_FRAME_BYTES} to 2147483647, "
                f"got {self.max_frame_bytes}"
            )
        if not self.host:
            raise InvalidBrokerConfigError("host must not be empty (use 0.0.0.0 for all)")
        if self.advertised_host == "":
            raise InvalidBrokerConfigError("advertised_host must not be empty")
        if self.shutdown_grace_s < 0:
            raise InvalidBrokerConfigError(
                f"shutdown_grace_s must be >= 0, got {self.shutdown_grace_s}"
            )

    def advertised_address(self, bound_port: int) -> tuple[str, int]:
        """Return the (host, port) clients are told, given the port actually bound."""
        host = self.advertised_host
        if host is None:
            host = os.uname().nodename if self.host in ("0.0.0.0", "::") else self.host
        port = self.advertised_port if self.advertised_port is not None else bound_port
        return host, port


def derive_cluster_id(data_path: str) -> str:
    """Return a stable 22-character cluster id for the data directory at ``data_path``."""
    digest = hashlib.sha256(os.path.realpath(data_path).encode()).hexdigest()
    return "hw-" + digest[:19]


def _check_port(name: str, port: int, *, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise InvalidBrokerConfigError(f"{name} must be from {low} to 65535, got {port}")


@dataclass(frozen=True, slots=True)
class Node:
    """This broker as clients see it: the leader, controller and coordinator of everything."""

    node_id: int
    host: str
    port: int
    cluster_id: str
