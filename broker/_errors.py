"""The broker's subtree of headwater's exception tree.

Everything the Kafka wire codec raises on purpose derives from :class:`ProtocolError`,
itself a :class:`~headwater.store.HeadwaterError`::

    HeadwaterError
    ├── ProtocolError                  bytes or values that do not fit the Kafka wire protocol
    │   ├── MalformedMessageError      bytes that do not match the frame or message layout
    │   │   ├── MalformedRequestError  ... in a request (the broker drops that connection)
    │   │   └── MalformedResponseError ... in a response (the client side of the codec)
    │   ├── FrameTooLargeError         a frame size above the limit, seen before allocating
    │   ├── UnsupportedVersionError    an API key or version without a layout
    │   └── EncodeError                a value that the layout cannot carry
    └── BrokerError                    the broker server or the admin client cannot do its job
        ├── InvalidBrokerConfigError   a broker setting out of range
        └── BrokerResponseError        a broker answered an admin request with an error code

A decoder never lets a foreign exception (``IndexError``, ``struct.error``,
``UnicodeDecodeError``, ``MemoryError``) escape: every length and count read from the
wire is checked against the bytes that remain before anything is allocated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from headwater.store import HeadwaterError

if TYPE_CHECKING:
    from ._protocol._frames import RequestHeader


class ProtocolError(HeadwaterError):
    """Bytes or values that do not fit the Kafka wire protocol."""


class MalformedMessageError(ProtocolError):
    """Bytes that do not match the frame or message layout they claim to follow.

    Truncated bodies, lengths or counts pointing past the end of the frame, negative
    lengths other than null, bytes left over after the body, invalid UTF-8.
    """


class MalformedRequestError(MalformedMessageError):
    """A request frame whose bytes do not match its API's layout.

    The broker answers this by closing only the offending connection.
    """


class MalformedResponseError(MalformedMessageError):
    """A response frame whose bytes do not match its API's layout (client side)."""


class FrameTooLargeError(ProtocolError):
    """A frame announced a size above the configured maximum.

    Raised as soon as the 4-byte size is read, before any buffer for the body exists.
    An HTTP request sent to a Kafka port reads as size 1195725856 (``b"GET "``) and ends
    here.
    """

    def __init__(self, size: int, max_frame_bytes: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the maximum of {max_frame_bytes}")
        self.size = size
        self.max_frame_bytes = max_frame_bytes


class UnsupportedVersionError(ProtocolError):
    """A request names an API key the codec does not know, or a version without a layout.

    :attr:`header` is the request header, decoded as far as the rules allow, so that the
    broker can answer an ApiVersions request with ``UNSUPPORTED_VERSION`` (the client then
    retries with a lower version); for every other API the broker closes the connection.
    """

    def __init__(self, message: str, header: RequestHeader | None = None) -> None:
        super().__init__(message)
        self.header = header


class EncodeError(ProtocolError):
    """A value that the layout cannot carry.

    ``None`` in a field that is not nullable in that version, an integer out of its
    type's range, a string longer than 32767 UTF-8 bytes in a classic encoding, a value
    of the wrong type.
    """


class BrokerError(HeadwaterError):
    """The broker server, or the admin client talking to a broker, cannot do its job."""


class InvalidBrokerConfigError(BrokerError):
    """A :class:`~headwater.broker.BrokerConfig` value is out of range."""


class BrokerResponseError(BrokerError):
    """A broker answered a request with an error code (the admin client's side).

    :attr:`code` is the :class:`~headwater.broker.KafkaErrorCode` (or the raw number when
    it has no name here); the message names it and repeats the broker's own message.
    """

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
