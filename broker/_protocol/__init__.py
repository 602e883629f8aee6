"""The sans-I/O Kafka wire codec: frames, headers and the layouts of every served API.

No sockets here: bytes in, dicts out, and back. ``_types`` reads and writes primitives,
``_schema`` is the declarative model (fields with version ranges), ``_messages`` declares
each API once, ``_codec`` compiles a declaration into a cached plan per (API, version), and
``_frames`` adds frames and headers. See ``_frames`` for how a server uses it.
"""

from ._codec import Message as Message
from ._codes import ApiKey as ApiKey
from ._codes import KafkaErrorCode as KafkaErrorCode
from ._frames import DEFAULT_MAX_FRAME_BYTES as DEFAULT_MAX_FRAME_BYTES
from ._frames import FrameReader as FrameReader
from ._frames import Request as Request
from ._frames import RequestHeader as RequestHeader
from ._frames import decode_request as decode_request
from ._frames import decode_response as decode_response
from ._frames import encode_request as encode_request
from ._frames import encode_response as encode_response
from ._messages import API_VERSIONS as API_VERSIONS
from ._messages import ApiVersionRange as ApiVersionRange

__all__ = (
    "API_VERSIONS",
    "DEFAULT_MAX_FRAME_BYTES",
    "ApiKey",
    "ApiVersionRange",
    "FrameReader",
    "KafkaErrorCode",
    "Message",
    "Request",
    "RequestHeader",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
)
