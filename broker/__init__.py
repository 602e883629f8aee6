"""The Kafka wire protocol: a sans-I/O codec and a broker serving the store over it.

:class:`Broker` serves an open :class:`~headwater.store.Store` to any Kafka client::

    async with open_store("headwater-data") as store:
        broker = Broker(store, BrokerConfig(host="127.0.0.1", port=9092))
        await broker.serve()        # until broker.shutdown()

:class:`AdminClient` administers topics on a running broker (``headwater topics ...
--bootstrap HOST:PORT``): creates, changes, grows and deletes them, deletes their records,
and deletes consumer groups' committed offsets; it also lists and describes transactional
ids (``headwater transactions``).

The process that owns a data directory serves it with :func:`serve_data_directory`, which
announces the address in the directory (``headwater.store.served_address`` finds it).

The codec turns request frames into :class:`Request` objects whose bodies are plain dicts
keyed by the snake_case names of Kafka's fields, and response dicts back into frames::

    >>> from headwater.broker import ApiKey, RequestHeader, decode_request, encode_request
    >>> header = RequestHeader(ApiKey.API_VERSIONS, 3, correlation_id=7, client_id="cli")
    >>> frame = b"".join(encode_request(header, {"client_software_name": "demo"}))
    >>> request = decode_request(frame[4:])
    >>> request.header.correlation_id, request.body["client_software_name"]
    (7, 'demo')
"""

from ._admin import AdminClient as AdminClient
from ._admin import RemotePartition as RemotePartition
from ._admin import RemoteTopic as RemoteTopic
from ._admin import RemoteTransaction as RemoteTransaction
from ._admin_connection import parse_address as parse_address
from ._config import BrokerConfig as BrokerConfig
from ._config import Node as Node
from ._dispatch import ClientInfo as ClientInfo
from ._dispatch import Handler as Handler
from ._dispatch import HandlerTable as HandlerTable
from ._errors import BrokerError as BrokerError
from ._errors import BrokerResponseError as BrokerResponseError
from ._errors import EncodeError as EncodeError
from ._errors import FrameTooLargeError as FrameTooLargeError
from ._errors import InvalidBrokerConfigError as InvalidBrokerConfigError
from ._errors import MalformedMessageError as MalformedMessageError
from ._errors import MalformedRequestError as MalformedRequestError
from ._errors import MalformedResponseError as MalformedResponseError
from ._errors import ProtocolError as ProtocolError
from ._errors import UnsupportedVersionError as UnsupportedVersionError
from ._protocol import API_VERSIONS as API_VERSIONS
from ._protocol import DEFAULT_MAX_FRAME_BYTES as DEFAULT_MAX_FRAME_BYTES
from ._protocol import ApiKey as ApiKey
from ._protocol import ApiVersionRange as ApiVersionRange
from ._protocol import FrameReader as FrameReader
from ._protocol import KafkaErrorCode as KafkaErrorCode
from ._protocol import Message as Message
from ._protocol import Request as Request
from ._protocol import RequestHeader as RequestHeader
from ._protocol import decode_request as decode_request
from ._protocol import decode_response as decode_response
from ._protocol import encode_request as encode_request
from ._protocol import encode_response as encode_response
from ._server import Broker as Broker
from ._server import BrokerStatistics as BrokerStatistics
from ._serving import serve_data_directory as serve_data_directory

__all__ = (
    "API_VERSIONS",
    "DEFAULT_MAX_FRAME_BYTES",
    "AdminClient",
    "ApiKey",
    "ApiVersionRange",
    "Broker",
    "BrokerConfig",
    "BrokerError",
    "BrokerResponseError",
    "BrokerStatistics",
    "ClientInfo",
    "EncodeError",
    "FrameReader",
    "FrameTooLargeError",
    "Handler",
    "HandlerTable",
    "InvalidBrokerConfigError",
    "KafkaErrorCode",
    "MalformedMessageError",
    "MalformedRequestError",
    "MalformedResponseError",
    "Message",
    "Node",
    "ProtocolError",
    "RemotePartition",
    "RemoteTopic",
    "RemoteTransaction",
    "Request",
    "RequestHeader",
    "UnsupportedVersionError",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "parse_address",
    "serve_data_directory",
)
