"""Frames and headers: the sans-I/O entry points of the Kafka wire codec.

Theory of operation
-------------------
A Kafka connection carries *frames*: an int32 size, then that many bytes. A request frame
holds a request header, then the body of the API and version the header names; a response
frame holds a response header, then the body (the client knows which API it answers from
the correlation id).

* Request header v1: api_key int16, api_version int16, correlation_id int32, client_id
  (int16-length nullable string, never compact). Header v2 appends a tagged-field section
  and is used exactly when the API's version is flexible.
* Response header v0: correlation_id int32. Header v1 appends a tagged-field section and is
  used when the API's version is flexible -- except for ApiVersions, whose response always
  uses header v0, so that a client can read it whatever version it asked for.

Whether a version is flexible depends only on the API (every version from the first
flexible one on is flexible), so the header of a request for a version the codec does not
know is still decodable; :class:`UnsupportedVersionError` carries it, and the broker
answers ApiVersions that way (a v0 body with ``UNSUPPORTED_VERSION``).

:class:`FrameReader` splits received bytes into frames. It checks each size against the
maximum as soon as the 4 size bytes are in, before it buffers any of the body, and it never
buffers more than it was given: memory follows the bytes actually received, not the sizes
claimed. Frames that arrive whole in one chunk are returned as zero-copy slices of it.

The server's loop::

    reader = FrameReader()
    for frame in reader.feed(received):         # FrameTooLargeError: close the connection
        request = decode_request(frame)         # Malformed.../UnsupportedVersionError
        body = handle(request)                  # a dict shaped like the response layout
        await stream.send_all(b"".join(encode_response(request.header, body)))

(or send the parts one by one: large records buffers are parts of their own, uncopied).

Everything here is pure and may be called from any task or thread; the only shared state
is the cache of compiled plans, filled idempotently. A :class:`FrameReader` belongs to one
connection. (Headers are named tuples: a request is decoded on the hot path.)
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, NamedTuple

from .._errors import (
    FrameTooLargeError,
    MalformedMessageError,
    MalformedRequestError,
    MalformedResponseError,
    UnsupportedVersionError,
)
from ._codec import Message, decode_body, encode_body
from ._codes import ApiKey, KafkaErrorCode
from ._messages import APIS
from ._schema import Api
from ._types import (
    Buffer,
    DecodeError,
    Output,
    read_uvarint,
    string_reader,
    string_writer,
)

DEFAULT_MAX_FRAME_BYTES = 100 * 1024 * 1024
"""Kafka's ``socket.request.max.bytes``: 100 MiB."""

_HEADER = struct.Struct(">hhi")
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_SIZE_PLACEHOLDER = b"\0\0\0\0"
_read_client_id = string_reader(compact=False, nullable=True)
_write_client_id = string_writer(compact=False, nullable=True)


class RequestHeader(NamedTuple):
    """The header of a request (v1 or v2; the codec picks the version from the API)."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None = None


class Request(NamedTuple):
    """A decoded request: its header and its body (a dict shaped by the API's layout)."""

    header: RequestHeader
    body: Message


def _api(api_key: int, version: int, header: RequestHeader | None = None) -> Api:
    api = APIS.get(api_key)
    if api is None:
        raise UnsupportedVersionError(f"unknown API key {api_key}", header)
    low, high = api.advertised
    if not low <= version <= high:
        raise UnsupportedVersionError(
            f"{api.name} v{version} is not supported (versions {low}-{high})", header
        )
    return api


def _skip_tagged(buf: memoryview, pos: int) -> int:
    count, pos = read_uvarint(buf, pos)
    for _ in range(count):
        _tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        pos += size
        if pos > len(buf):
            raise DecodeError("header tagged field runs past the end of the frame")
    return pos


def _is_flexible(api_key: int, version: int) -> bool:
    api = APIS.get(api_key)
    return api is not None and api.is_flexible(version)


def decode_request(frame: Buffer, *, allow_trailing_bytes: bool = False) -> Request:
    """Decode one request frame (without its size prefix).

    ``records`` fields in the body are zero-copy views of ``frame``.

    :param allow_trailing_bytes: ignore bytes after the body instead of calling the frame
        malformed. A Kafka broker ignores them, and librdkafka (2.16) sends three with a
        flexible Metadata request for every topic (a 4-byte array-count placeholder it
        leaves unshrunk); the broker passes ``True``.

    :raises MalformedRequestError: if the header or the body do not match their layout.
    :raises UnsupportedVersionError: for an unknown API key or a version outside the
        advertised range; its ``header`` attribute holds the decoded header.
    """
    view = memoryview(frame)
    try:
        api_key, api_version, correlation_id = _HEADER.unpack_from(view, 0)
        client_id, pos = _read_client_id(view, _HEADER.size)
        if _is_flexible(api_key, api_version):
            pos = _skip_tagged(view, pos)
    except (DecodeError, struct.error, IndexError, ValueError) as exc:
        raise MalformedRequestError(f"malformed request header: {exc}") from exc
    header = RequestHeader(api_key, api_version, correlation_id, client_id)
    api = _api(api_key, api_version, header)
    return Request(
        header,
        decode_body(
            api,
            api_version,
            view,
            pos,
            response=False,
            error=MalformedRequestError,
            allow_trailing_bytes=allow_trailing_bytes,
        ),
    )


def encode_response(
    header: RequestHeader, body: Mapping[str, Any], *, api_version: int | None = None
) -> list[Buffer]:
    """Encode the response to the request with ``header`` as a frame, size prefix included.

    :param body: a mapping shaped like the response layout; missing keys take defaults.
    :param api_version: encode the body in this version rather than the request's (the
        ApiVersions answer to an unsupported version is encoded as v0).
    :returns: buffers to send in order; large ``records`` buffers are among them as given,
        uncopied. ``b"".join(...)`` makes one bytes object of them.
    :raises EncodeError: if a value does not fit its field.
    :raises UnsupportedVersionError: if the codec has no layout for that API and version.
    """
    version = header.api_version if api_version is None else api_version
    api = _api(header.api_key, version)
    out = Output()
    out += _SIZE_PLACEHOLDER
    out += _INT32.pack(header.correlation_id)
    if api.is_flexible(version) and api.key != ApiKey.API_VERSIONS:
        out.append(0)  # response header v1: no tagged fields
    encode_body(api, version, body, out, response=True)
    return _framed(out)


def encode_request(header: RequestHeader, body: Mapping[str, Any]) -> list[Buffer]:
    """Encode a request as a frame, size prefix included (the client side of the codec).

    :returns: buffers to send in order, as :func:`encode_response` does.
    :raises EncodeError: if a value does not fit its field.
    :raises UnsupportedVersionError: if the codec has no layout for that API and version.
    """
    api = _api(header.api_key, header.api_version)
    out = Output()
    out += _SIZE_PLACEHOLDER
    out += _HEADER.pack(header.api_key, header.api_version, header.correlation_id)
    _write_client_id(out, header.client_id)
    if api.is_flexible(header.api_version):
        out.append(0)  # request header v2: no tagged fields
    encode_body(api, header.api_version, body, out, response=False)
    return _framed(out)


def decode_response(header: RequestHeader, frame: Buffer) -> Message:
    """Decode the response frame (without its size prefix) to the request with ``header``.

    An ApiVersions response with ``UNSUPPORTED_VERSION`` is read as v0, the version a
    broker answers in when it does not know the requested one.

    :raises MalformedResponseError: if the bytes do not match the layout, or the
        correlation id is not the request's.
    :raises UnsupportedVersionError: if the codec has no layout for that API and version.
    """
    version = header.api_version
    api = _api(header.api_key, version)
    view = memoryview(frame)
    try:
        (correlation_id,) = _INT32.unpack_from(view, 0)
        pos = 4
        if api.key == ApiKey.API_VERSIONS:
            if (
                version > 0
                and _INT16.unpack_from(view, pos)[0] == KafkaErrorCode.UNSUPPORTED_VERSION
            ):
                version = 0
        elif api.is_flexible(version):
            pos = _skip_tagged(view, pos)
    except (DecodeError, struct.error, IndexError) as exc:
        raise MalformedResponseError(f"malformed response header: {exc}") from exc
    if correlation_id != header.correlation_id:
        raise MalformedResponseError(
            f"correlation id {correlation_id} does not match the request's {header.correlation_id}"
        )
    return decode_body(api, version, view, pos, response=True, error=MalformedResponseError)


def _framed(out: Output) -> list[Buffer]:
    _INT32.pack_into(out, 0, out.encoded_size() - 4)
    return out.parts()


class FrameReader:
    """Split a received byte stream into frames (sans-I/O; one reader per connection).

    :param max_frame_bytes: the largest frame size accepted (the size prefix excluded).

    After it raises, the stream has lost its framing: close the connection.
    Not thread-safe; one task feeds it.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._prefix = bytearray()  # the first bytes of a size prefix split across feeds
        self._partial: bytearray | None = None  # the start of a body split across feeds
        self._size = 0  # the size of that body

    @property
    def buffered_bytes(self) -> int:
        """Return how many received bytes wait for the rest of their frame."""
        return len(self._prefix) + (len(self._partial) if self._partial is not None else 0)

    def feed(self, data: Buffer) -> list[memoryview]:
        """Add received bytes; return the frames they complete, in order, sizes stripped.

        Frames wholly inside ``data`` are zero-copy slices of it when it is ``bytes``
        (other buffers are copied once first, since their owner may reuse them).

        :raises FrameTooLargeError: if a size exceeds ``max_frame_bytes``; nothing of
            that frame's body has been buffered.
        :raises MalformedMessageError: if a size is negative.
        """
        view = memoryview(data if isinstance(data, bytes) else bytes(data))
        frames: list[memoryview] = []
        pos = 0
        if self._partial is not None:
            pos = min(self._size - len(self._partial), len(view))
            self._partial += view[:pos]
            if len(self._partial) < self._size:
                return frames
            frames.append(memoryview(self._partial))
            self._partial = None
        elif self._prefix:
            pos = min(4 - len(self._prefix), len(view))
            self._prefix += view[:pos]
            if len(self._prefix) < 4:
                return frames
            size = self._checked_size(_INT32.unpack(self._prefix)[0])
            self._prefix.clear()
            pos = self._take(view, pos, size, frames)
        while pos >= 0 and len(view) - pos >= 4:
            size = self._checked_size(_INT32.unpack_from(view, pos)[0])
            pos = self._take(view, pos + 4, size, frames)
        if 0 <= pos < len(view):
            self._prefix += view[pos:]
        return frames

    def _checked_size(self, size: int) -> int:
        if size < 0:
            raise MalformedMessageError(f"negative frame size {size}")
        if size > self.max_frame_bytes:
            raise FrameTooLargeError(size, self.max_frame_bytes)
        return size

    def _take(self, view: memoryview, pos: int, size: int, frames: list[memoryview]) -> int:
        """Return the position after the frame body at ``pos``, or -1 if it is incomplete."""
        end = pos + size
        if end <= len(view):
            frames.append(view[pos:end])
            return end
        self._partial = bytearray(view[pos:])
        self._size = size
        return -1
