"""The admin client's connection to one broker: a plain blocking socket speaking the
Kafka protocol through the broker's own codec.

Theory of operation
-------------------
A connection asks ApiVersions when it opens (v3, falling back to v0 as a broker that
does not know v3 asks) and then sends each request at the highest version both sides
speak (``request``), or at one the caller names (``send``). One request at a time; a
response larger than 256 MiB, or one whose frame does not parse, is refused as
malformed rather than read. Also here: ``parse_address``, the ``HOST:PORT`` parsing every
command-line option that names a broker shares.
"""

from __future__ import annotations

import importlib.metadata
import socket
import struct
from collections.abc import Mapping
from typing import Any

from ._errors import BrokerError, BrokerResponseError, MalformedResponseError
from ._protocol import (
    API_VERSIONS,
    ApiKey,
    KafkaErrorCode,
    Message,
    RequestHeader,
    decode_response,
    encode_request,
)

_MAX_RESPONSE_BYTES = 256 * 1024 * 1024
_SIZE = struct.Struct(">i")
try:
    _SOFTWARE_VERSION = importlib.metadata.version("headwater")
except importlib.metadata.PackageNotFoundError:  # run from a checkout without installing
    _SOFTWARE_VERSION = "0"


def parse_address(
    text: str, default_port: int = 9092, *, allow_any_port: bool = False
) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT``; the port may be left out) into host and port.

    :param allow_any_port: accept port 0 ("any free port", for listening).
    :raises ValueError: if the port is not a number from 1 (or 0) to 65535, or the host
        is empty.
    """
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise ValueError(f"{text!r}: expected HOST:PORT")
    if not port_text:
        return host, default_port
    low = 0 if allow_any_port else 1
    if not port_text.isdigit() or not low <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from {low} to 65535")
    return host, int(port_text)


def check_error(code: int, action: str, message: str | None) -> None:
    """Raise :class:`BrokerResponseError` naming ``action`` unless ``code`` is NONE."""
    if code == KafkaErrorCode.NONE:
        return
    try:
        name = KafkaErrorCode(code).name
    except ValueError:
        name = f"error {code}"
    detail = f": {message}" if message else ""
    raise BrokerResponseError(f"{action} failed with {name}{detail}", code)


class Connection:
    """A blocking connection to one broker (see the module docstring)."""

    def __init__(self, host: str, port: int, client_id: str, timeout_s: float) -> None:
        self.address = f"{host}:{port}"
        self._sock = socket.create_connection((host, port), timeout=timeout_s)
        self._client_id = client_id
        self._correlation = 0
        self.versions = self._negotiate()

    def close(self) -> None:
        self._sock.close()

    def _negotiate(self) -> dict[int, int]:
        # Kafka checks both names against [a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?: an
        # empty version is an INVALID_REQUEST.
        body = self.send(
            ApiKey.API_VERSIONS,
            3,
            {"client_software_name": "headwater", "client_software_version": _SOFTWARE_VERSION},
        )
        if body["error_code"] == KafkaErrorCode.UNSUPPORTED_VERSION:
            body = self.send(ApiKey.API_VERSIONS, 0, {})
        check_error(body["error_code"], "ApiVersions", None)
        versions = {}
        for entry in body["api_keys"]:
            ours = API_VERSIONS.get(entry["api_key"])
            if ours is None:
                continue
            low = max(ours.accepted[0], entry["min_version"])
            high = min(ours.advertised[1], entry["max_version"])
            if low <= high:
                versions[entry["api_key"]] = high
        return versions

    def request(self, api_key: ApiKey, body: Mapping[str, Any]) -> Message:
        version = self.versions.get(api_key)
        if version is None:
            raise BrokerError(f"the broker at {self.address} does not serve {api_key.name}")
        return self.send(api_key, version, body)

    def send(self, api_key: ApiKey, version: int, body: Mapping[str, Any]) -> Message:
        self._correlation += 1
        header = RequestHeader(api_key, version, self._correlation, self._client_id)
        self._sock.sendall(b"".join(encode_request(header, body)))
        (size,) = _SIZE.unpack(self._receive(4))
        if not 4 <= size <= _MAX_RESPONSE_BYTES:
            raise MalformedResponseError(f"response frame size {size} from {self.address}")
        return decode_response(header, self._receive(size))

    def _receive(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = self._sock.recv(min(size - len(chunks), 1 << 20))
            if not chunk:
                raise ConnectionResetError(f"the broker at {self.address} closed the connection")
            chunks += chunk
        return bytes(chunks)
