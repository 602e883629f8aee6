"""The broker's response sending: buffers in order, whole, however the socket takes them."""

from __future__ import annotations

import socket

import anyio
import pytest
from anyio.abc import SocketAttribute

from headwater.broker._server import _send


@pytest.mark.parametrize("direct", [True, False], ids=["sendmsg", "stream"])
async def test_parts_arrive_whole_and_in_order_when_the_socket_fills(direct: bool) -> None:
    # A response larger than the socket's buffers: the first sendmsg takes part of it,
    # part of a buffer included, and the rest goes as the reader drains the socket.
    parts = [b"head", memoryview(b"a" * 300_000), b"", bytearray(b"b" * 200_001), b"tail"]
    expected = b"".join(parts)
    received = bytearray()
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(SocketAttribute.local_port)
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            server = await listener.listeners[0].accept()
            async with server:
                raw = server.extra(SocketAttribute.raw_socket)
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

                async def read() -> None:
                    while len(received) < len(expected):
                        received.extend(await client.receive(65536))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(read)
                    await _send(server, raw if direct else None, parts)
    assert received == expected
