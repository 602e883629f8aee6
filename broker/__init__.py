"""The Kafka wire protocol: a sans-I/O codec and a broker serving the store over it.

The codec turns request frames into :class:`Request` objects whose bodies are plain dicts
keyed by the snake_case names of Kafka's fields, and response dicts back into frames::

    >>> from headwater.broker import ApiKey, RequestHeader, decode_request, encode_request
    >>> header = RequestHeader(ApiKey.API_VERSIONS, 3, correlation_id=7, client_id="cli")
    >>> frame = b"".join(encode_request(header, {"client_software_name": "demo"}))
    >>> request = decode_request(frame[4:])
    >>> request.header.correlation_id, request.body["client_software_name"]
    (7, 'demo')
"""

from ._errors import EncodeError as EncodeError
from ._errors import FrameTooLargeError as FrameTooLargeError
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

__all__ = (
    "API_VERSIONS",
    "DEFAULT_MAX_FRAME_BYTES",
    "ApiKey",
    "ApiVersionRange",
    "EncodeError",
    "FrameReader",
    "FrameTooLargeError",
    "KafkaErrorCode",
    "MalformedMessageError",
    "MalformedRequestError",
    "MalformedResponseError",
    "Message",
    "ProtocolError",
    "Request",
    "RequestHeader",
    "UnsupportedVersionError",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
)
